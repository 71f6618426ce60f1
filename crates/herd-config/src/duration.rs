//! Durations as herd's configuration writes them ("500ms", "1h 30m", "2.5s"): humantime's
//! grammar, without its panic.
//!
//! humantime 2.4's `parse_duration` panics, instead of answering `NumberOverflow`, when a total
//! reaches `u64::MAX` seconds with exactly one second of nanoseconds to carry (its `add_current`
//! tests `nsec > 1_000_000_000` where it means `>=`; chronotope/humantime#66, found here by the
//! `expressions` fuzz target): `"18446744073709551615s 999999999ns 1ns"`. A config file is
//! untrusted input, so herd refuses such a text before humantime reads it.

use std::time::Duration;

/// humantime's largest unit (a year, 365.25 days), in seconds.
const YEAR_SECS: f64 = 31_557_600.0;

/// `text` as a duration, or why it is not one (humantime's message).
///
/// A text whose numbers could add up to `u64::MAX` seconds in humantime's largest unit is
/// refused as too large before it is parsed: each maximal run of digits (white space between
/// digits does not end a number in humantime's grammar) is below `10^digits`, so the total is
/// below the sum of `10^digits` years. That admits every number of up to 11 digits, whatever
/// its unit.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bound: f64 = text
        .split(|c: char| !c.is_ascii_digit() && !c.is_whitespace())
        .map(|run| run.chars().filter(char::is_ascii_digit).count())
        .filter(|&digits| digits > 0)
        .map(|digits| 10f64.powi(digits.min(400) as i32) * YEAR_SECS)
        .sum();
    // Below u64::MAX by far more than the one second a carry adds.
    if bound >= u64::MAX as f64 / 2.0 {
        return Err("number is too large".into());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_humantime_reads_them() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(
            parse("99999999999ns"),
            Ok(Duration::from_nanos(99_999_999_999))
        );
        assert!(
            parse("5 parsecs")
                .unwrap_err()
                .contains("unknown time unit")
        );
        assert!(parse("").is_err());
    }

    #[test]
    fn totals_near_the_largest_duration_are_refused_not_a_panic() {
        for text in [
            "18446744073709551615s 999999999ns 1ns",
            "18446744073709551615s 1000000000ns",
            "18446744073709551616\n18446744073709551612s1.0s1.2s1.8s",
            "1 8446744073709551615s 0.5s 0.5s",
            "584554530872y",
        ] {
            assert_eq!(parse(text), Err("number is too large".into()), "{text:?}");
        }
    }
}
