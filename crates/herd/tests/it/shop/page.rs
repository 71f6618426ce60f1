//! The storefront in headless Chromium (skipped when none is installed): after an order is
//! placed, the page served by orders through the gateway lists the items with their stock and
//! the order with its status and its notification, from its own polling of the public API.
//! A screenshot goes to `target/shop.png`.

use std::path::Path;
use std::time::Duration;

use super::Shop;
use crate::dashboard::{chromium, headless};
use crate::util::wait_for;

/// The markup of the element whose `data-key` is `key`, up to the end of its row.
fn row<'a>(dom: &'a str, key: &str) -> Option<&'a str> {
    let at = dom.find(&format!(r#"data-key="{key}""#))?;
    let rest = &dom[at..];
    let end = rest.find("</tr>").or_else(|| rest.find("</li>"))?;
    Some(&rest[..end])
}

/// The text of the cell `data-field="{field}"` in `row`.
fn field<'a>(row: &'a str, field: &str) -> Option<&'a str> {
    let at = row.find(&format!(r#"data-field="{field}""#))?;
    let text = &row[at..];
    let text = &text[text.find('>')? + 1..];
    Some(text[..text.find("</td>")?].trim())
}

#[test]
fn the_storefront_shows_items_an_order_and_its_notification() {
    let Some(chromium) = chromium() else {
        return eprintln!("skipped: no chromium binary found (apt-get install chromium)");
    };
    let shop = Shop::start();
    let order = shop.order(&[("apple", 2), ("tea", 1)], &[]).json();
    let id = order["id"].as_str().unwrap().to_string();
    let note = shop.notification(&id);
    let rejected = shop.order(&[("bread", 500)], &[]).json();
    shop.notification(rejected["id"].as_str().unwrap());

    let url = format!("http://{}/", shop.gateway);
    let dom = wait_for(
        "the page to show the order",
        Duration::from_secs(60),
        || {
            let out = headless(&chromium, &url, &["--dump-dom"], 3000);
            let dom = String::from_utf8_lossy(&out.stdout).into_owned();
            let shown = row(&dom, &format!("order:{id}"))
                .and_then(|r| field(r, "notification"))
                .is_some_and(|n| n.contains("created"));
            shown.then_some(dom)
        },
    );
    assert!(dom.contains(r#"data-state="live""#), "{dom}");
    let apple = row(&dom, "item:apple").expect("apple listed");
    assert_eq!(field(apple, "available"), Some("98"));
    assert!(apple.contains("Apple"));
    assert_eq!(
        field(row(&dom, "item:tea").unwrap(), "available"),
        Some("99")
    );
    assert_eq!(
        field(row(&dom, "item:milk").unwrap(), "available"),
        Some("100")
    );

    let placed = row(&dom, &format!("order:{id}")).unwrap();
    let status = field(placed, "status").unwrap();
    assert!(status.contains("accepted"), "{status}");
    assert!(placed.contains("2 × apple, 1 × tea"), "{placed}");
    assert!(
        placed.contains(note["message"].as_str().unwrap()),
        "{placed}"
    );
    assert!(
        placed.contains(&format!(r#"data-cancel="{id}""#)),
        "a cancel button: {placed}"
    );

    let refused = row(&dom, &format!("order:{}", rejected["id"].as_str().unwrap())).unwrap();
    assert!(field(refused, "status").unwrap().contains("rejected"));
    assert!(
        !refused.contains("data-cancel"),
        "no cancel button for a rejected order"
    );
    assert!(row(&dom, &format!("notification:{id}")).is_some());

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("shop.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &chromium,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
        ],
        3000,
    );
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 0),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
