//! HTTP dates (RFC 9110 §5.6.7), read two ways.
//!
//! [`parse`] is lenient, as recipients are encouraged to be: IMF-fixdate and
//! the obsolete RFC 850 and asctime forms, with any spacing and separators,
//! `UTC` for `GMT`, a two-digit year anywhere. [`parse_strict`] takes the
//! three forms exactly as the grammar writes them: it reads `Expires`, where
//! anything else means "already expired" (RFC 9111 §5.3).
//!
//! Both accept any case in the weekday, month and `GMT` (the instant is
//! unambiguous), and any weekday name (senders get it wrong; the date itself
//! decides). A two-digit year is 20xx below 70 and 19xx from 70, the reading
//! that keeps it within 50 years of now until 2050.

use std::time::{Duration, SystemTime};

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The time an HTTP-date stands for, or None if it is not one.
pub(crate) fn parse(text: &str) -> Option<SystemTime> {
    // The strict parser takes the usual, well-formed case.
    if let Ok(t) = httpdate::parse_http_date(text) {
        return Some(t);
    }
    let (mut month, mut time, mut numbers) = (None, None, Vec::with_capacity(2));
    let (mut zone, mut month_first) = (false, false);
    for token in text.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        let lower = token.to_ascii_lowercase();
        if token.contains(':') {
            time = Some(clock(token)?);
        } else if token.bytes().all(|b| b.is_ascii_digit()) {
            numbers.push(token);
        } else if lower == "gmt" || lower == "utc" {
            zone = true;
        } else if let Some(m) = MONTHS.iter().position(|m| is_name(&lower, m)) {
            month = Some(m as u32 + 1);
            month_first = numbers.is_empty();
        } else if !(numbers.is_empty() && month.is_none() && WEEKDAYS.iter().any(|w| is_name(&lower, w))) {
            return None;
        }
    }
    // The asctime form (`Mon Aug  8 02:01:18 2050`) has no zone; the others
    // (day before month) must say GMT.
    if numbers.len() != 2 || (month_first && (zone || numbers[1].len() != 4)) || (!month_first && !zone) {
        return None;
    }
    let day: u32 = numbers[0].parse().ok().filter(|d| (1..=2).contains(&numbers[0].len()) && *d >= 1)?;
    let year: i64 = match numbers[1].len() {
        4 => numbers[1].parse().ok()?,
        2 => numbers[1].parse::<i64>().map(|y| if y < 70 { 2000 + y } else { 1900 + y }).ok()?,
        _ => return None,
    };
    let month = month?;
    if day > days_in_month(year, month) {
        return None;
    }
    at(year, month, day, time?)
}

fn at(year: i64, month: u32, day: u32, time: u32) -> Option<SystemTime> {
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(time);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// The time an HTTP-date in one of the three forms of RFC 9110 §5.6.7 stands
/// for: `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` or
/// `Sun Nov  6 08:49:37 1994`, each byte where the grammar puts it; None for
/// anything else (another zone, a two-digit year in the first form, a missing
/// comma, a doubled space, dashes in the first form).
pub(crate) fn parse_strict(text: &str) -> Option<SystemTime> {
    if !text.is_ascii() {
        return None; // and every slice below is at a character boundary
    }
    let (weekday, rest) = text.split_once([',', ' '])?;
    let lower = weekday.to_ascii_lowercase();
    let short = WEEKDAYS.contains(&lower.as_str());
    if !short && !WEEKDAYS.iter().any(|w| is_name(&lower, w)) {
        return None;
    }
    let b = rest.as_bytes();
    let (day, month, year, time) = match text.as_bytes()[weekday.len()] {
        // IMF-fixdate: `, 06 Nov 1994 08:49:37 GMT`.
        b',' if short && b.len() == 25 && b[0] == b' ' && b[3] == b' ' && b[7] == b' ' && b[12] == b' ' => {
            gmt(&rest[21..])?;
            (&rest[1..3], &rest[4..7], year4(&rest[8..12])?, &rest[13..21])
        }
        // RFC 850: `, 06-Nov-94 08:49:37 GMT`, with the weekday's long name.
        b',' if !short && b.len() == 23 && b[0] == b' ' && b[3] == b'-' && b[7] == b'-' && b[10] == b' ' => {
            gmt(&rest[19..])?;
            let yy: i64 = digits(&rest[8..10])?.into();
            (&rest[1..3], &rest[4..7], if yy < 70 { 2000 + yy } else { 1900 + yy }, &rest[11..19])
        }
        // asctime: ` Nov  6 08:49:37 1994` (the day is two digits or space and one).
        b' ' if short && b.len() == 20 && b[3] == b' ' && b[6] == b' ' && b[15] == b' ' => {
            let day = rest[4..6].strip_prefix(' ').filter(|d| !d.starts_with(' ')).unwrap_or(&rest[4..6]);
            (day, &rest[0..3], year4(&rest[16..20])?, &rest[7..15])
        }
        _ => return None,
    };
    let day = digits(day).filter(|d| *d >= 1)?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    if day > days_in_month(year, month) {
        return None;
    }
    at(year, month, day, clock(time)?)
}

/// ` GMT`, in any case.
fn gmt(text: &str) -> Option<()> {
    text.eq_ignore_ascii_case(" gmt").then_some(())
}

/// One or two ASCII digits as a number.
fn digits(text: &str) -> Option<u32> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

fn year4(text: &str) -> Option<i64> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

/// `mon` or `monday` for the weekday `mon`; `aug` or `august` for the month.
fn is_name(token: &str, short: &str) -> bool {
    const LONG: [&str; 19] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    token == short || LONG.iter().any(|l| l.starts_with(short) && *l == token)
}

/// `08:49:37` as seconds into the day (a leap second counts as :59).
fn clock(token: &str) -> Option<u32> {
    let mut parts = token.split(':');
    let mut field = |max: u32| -> Option<u32> {
        let p = parts.next()?;
        let v: u32 = p.parse().ok().filter(|_| p.len() == 2)?;
        (v <= max).then_some(v.min(59))
    };
    let (h, m, s) = (field(23)?, field(59)?, field(60)?);
    parts.next().is_none().then_some(h * 3600 + m * 60 + s)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Option<u64> {
        parse(text).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn every_form_and_case_reads_the_same_instant() {
        let want = Some(2_543_536_878); // Mon, 08 Aug 2050 02:01:18 GMT
        for text in [
            "Mon, 08 Aug 2050 02:01:18 GMT",
            "Thu, 08 Aug 2050 02:01:18 GMT",
            "mon, 08 aug 2050 02:01:18 gmt",
            "MON, 08 AUG 2050 02:01:18 GMT",
            "Thu Aug  8 02:01:18 2050",
            "Mon Aug 08 02:01:18 2050",
            "Monday, 08-Aug-50 02:01:18 GMT",
            "thursday, 08-aug-50 02:01:18 GMT",
        ] {
            assert_eq!(secs(text), want, "{text}");
        }
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
    }

    #[test]
    fn what_is_not_a_date() {
        for text in [
            "0",
            "-1",
            "never",
            "",
            "Mon, 32 Aug 2050 02:01:18 GMT",
            "Mon, 29 Feb 2050 02:01:18 GMT",
            "Mon, 08 Aug 2050 24:01:18 GMT",
            "Mon, 08 Aug 2050 02:01:18 PST",
            "Mon, 08 Aug 2050 02:01:18",
            "Mon, 08 Foo 2050 02:01:18 GMT",
            "Mon, 08 Aug 2050 GMT",
            "Mon, 08 Aug 205 02:01:18 GMT",
            "Mon, 08 Aug 2050 2:1:18 GMT",
        ] {
            assert_eq!(secs(text), None, "{text:?}");
        }
        assert_eq!(secs("Tue, 29 Feb 2028 00:00:00 GMT"), Some(1_835_395_200));
        assert!(parse("Thu, 01 Jan 1900 00:00:00 GMT").is_some(), "before 1970 is a date (long expired)");
    }

    fn strict(text: &str) -> Option<u64> {
        parse_strict(text).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn the_three_forms_are_strict_dates() {
        let want = Some(2_543_536_878); // Mon, 08 Aug 2050 02:01:18 GMT
        for text in [
            "Mon, 08 Aug 2050 02:01:18 GMT",
            "Thu, 08 Aug 2050 02:01:18 GMT",
            "THU, 08 AUG 2050 02:01:18 gMT",
            "Monday, 08-Aug-50 02:01:18 GMT",
            "Mon Aug  8 02:01:18 2050",
            "Mon Aug 08 02:01:18 2050",
        ] {
            assert_eq!(strict(text), want, "{text}");
        }
        assert_eq!(strict("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(strict("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(strict("Tue, 29 Feb 2028 00:00:00 GMT"), Some(1_835_395_200));
    }

    #[test]
    fn anything_else_is_not_a_strict_date() {
        for text in [
            "0",
            "-1",
            "",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050  02:01:18 GMT",
            "Thu,  18 Aug 2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18",
            "Thu, 32 Aug 2050 02:01:18 GMT",
            "Thu, 29 Feb 2050 02:01:18 GMT",
            "Thursday, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18-Aug-50 02:01:18 GMT",
            "Thursday, 18-Aug-2050 02:01:18 GMT",
            "Thu Aug 18 02:01:18 50",
            "Thu Aug   8 02:01:18 2050",
            "Thu Aug 18 02:01:18 2050 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT ",
            "Xyz, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Foo 2050 02:01:18 GMT",
            "Thu, +8 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMé",
            "Thu, 18 Aug 2050 02:01:1é GMT",
        ] {
            assert_eq!(strict(text), None, "{text:?}");
        }
    }
}
