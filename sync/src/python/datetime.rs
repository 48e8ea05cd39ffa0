//! Timezone-aware datetimes as Barman stores and prints them: `str(datetime)` in backup.info,
//! `ctime()` and `isoformat()` in sync-info JSON. Parsing covers what `dateutil.parser.parse`
//! meets in Barman catalogs (ISO-like text and ctime text); naive times get the local offset,
//! as Barman's `load_datetime_tz` does.

use std::fmt;

/// A wall-clock time with its UTC offset, microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub microsecond: u32,
    /// Seconds east of UTC.
    pub offset_seconds: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised date and time {text:?}")]
pub struct DateTimeError {
    pub text: String,
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl DateTime {
    /// Parses `2024-01-01 12:00:00.123456+00:00`, the `T`-separated form, a `Z` suffix, offsets
    /// with or without a colon, and `ctime()` text such as `Mon Jan  1 12:00:00 2024`.
    pub fn parse(text: &str) -> Result<DateTime, DateTimeError> {
        let trimmed = text.trim();
        parse_iso_like(trimmed)
            .or_else(|| parse_ctime(trimmed))
            .ok_or_else(|| DateTimeError {
                text: text.to_owned(),
            })
    }

    /// Python's `str(datetime)`: `YYYY-MM-DD HH:MM:SS[.ffffff]+HH:MM`.
    pub fn to_python_str(&self) -> String {
        format!(
            "{} {}{}",
            self.date_part(),
            self.time_part(),
            self.offset_part()
        )
    }

    /// Python's `datetime.isoformat()`.
    pub fn isoformat(&self) -> String {
        format!(
            "{}T{}{}",
            self.date_part(),
            self.time_part(),
            self.offset_part()
        )
    }

    /// Python's `datetime.ctime()`: the wall time, with no offset.
    pub fn ctime(&self) -> String {
        let weekday = (days_from_civil(self.year, self.month, self.day) + 3).rem_euclid(7);
        format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {:04}",
            WEEKDAYS[weekday as usize],
            MONTHS[(self.month - 1) as usize],
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.year
        )
    }

    /// Seconds since the Unix epoch (fraction dropped).
    pub fn unix_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
            - i64::from(self.offset_seconds)
    }

    fn date_part(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    fn time_part(&self) -> String {
        let mut out = format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second);
        if self.microsecond != 0 {
            out.push_str(&format!(".{:06}", self.microsecond));
        }
        out
    }

    fn offset_part(&self) -> String {
        let sign = if self.offset_seconds < 0 { '-' } else { '+' };
        let total = self.offset_seconds.unsigned_abs();
        let mut out = format!("{sign}{:02}:{:02}", total / 3600, (total / 60) % 60);
        let seconds = total % 60;
        if seconds > 0 {
            out.push_str(&format!(":{seconds:02}"));
        }
        out
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_python_str())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn number(text: &str, width: usize) -> Option<u32> {
    if text.len() == width && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn validated(mut value: DateTime, offset: Option<i32>) -> Option<DateTime> {
    let valid = (1..=12).contains(&value.month)
        && value.day >= 1
        && value.day <= days_in_month(value.year, value.month)
        && value.hour < 24
        && value.minute < 60
        && value.second < 60;
    if !valid {
        return None;
    }
    value.offset_seconds = match offset {
        Some(offset) => offset,
        None => local_offset(&value),
    };
    Some(value)
}

fn parse_iso_like(text: &str) -> Option<DateTime> {
    let (date, rest) = text.split_at_checked(10)?;
    let mut date_parts = date.split('-');
    let year = number(date_parts.next()?, 4)? as i32;
    let month = number(date_parts.next()?, 2)?;
    let day = number(date_parts.next()?, 2)?;
    let rest = rest.strip_prefix([' ', 'T'])?;
    let (clock, offset_text) = match rest.find(['+', '-', 'Z']) {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (clock, None),
    };
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?, 2)?;
    let minute = number(clock_parts.next()?, 2)?;
    let second = match clock_parts.next() {
        Some(part) => number(part, 2)?,
        None => 0,
    };
    if clock_parts.next().is_some() {
        return None;
    }
    let microsecond = match fraction {
        None => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let mut padded: String = digits.chars().take(6).collect();
            while padded.len() < 6 {
                padded.push('0');
            }
            padded.parse().ok()?
        }
        Some(_) => return None,
    };
    let offset = parse_offset(offset_text)?;
    let value = DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        microsecond,
        offset_seconds: 0,
    };
    validated(value, offset)
}

/// `Some(None)` for no offset (naive), `Some(Some(seconds))` for a valid one.
fn parse_offset(text: &str) -> Option<Option<i32>> {
    if text.is_empty() {
        return Some(None);
    }
    if text == "Z" {
        return Some(Some(0));
    }
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if !(digits.len() == 4 || digits.len() == 6 || digits.len() == 2) {
        return None;
    }
    let hours = number(&digits[..2], 2)? as i32;
    let minutes = if digits.len() >= 4 {
        number(&digits[2..4], 2)? as i32
    } else {
        0
    };
    let seconds = if digits.len() == 6 {
        number(&digits[4..6], 2)? as i32
    } else {
        0
    };
    Some(Some(sign * (hours * 3600 + minutes * 60 + seconds)))
}

fn parse_ctime(text: &str) -> Option<DateTime> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [weekday, month, day, clock, year] = words.as_slice() else {
        return None;
    };
    if !WEEKDAYS.contains(weekday) {
        return None;
    }
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    let year = number(year, 4)? as i32;
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?, 2)?;
    let minute = number(clock_parts.next()?, 2)?;
    let second = number(clock_parts.next()?, 2)?;
    let value = DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        microsecond: 0,
        offset_seconds: 0,
    };
    validated(value, None)
}

/// The local UTC offset in force at a naive wall time (what `dateutil.tz.tzlocal()` gives).
fn local_offset(value: &DateTime) -> i32 {
    // SAFETY: `tm` is fully initialised by zeroing and the assignments below, and `mktime`
    // only reads and normalises it.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = value.year - 1900;
        tm.tm_mon = value.month as i32 - 1;
        tm.tm_mday = value.day as i32;
        tm.tm_hour = value.hour as i32;
        tm.tm_min = value.minute as i32;
        tm.tm_sec = value.second as i32;
        tm.tm_isdst = -1;
        let epoch = libc::mktime(&mut tm);
        if epoch == -1 {
            return 0;
        }
        let as_if_utc = days_from_civil(value.year, value.month, value.day) * 86_400
            + i64::from(value.hour * 3600 + value.minute * 60 + value.second);
        (as_if_utc - epoch as i64) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python() {
        let value = DateTime::parse("2024-01-01 12:00:00.123456+00:00").unwrap();
        assert_eq!(value.to_python_str(), "2024-01-01 12:00:00.123456+00:00");
        assert_eq!(value.isoformat(), "2024-01-01T12:00:00.123456+00:00");
        assert_eq!(value.ctime(), "Mon Jan  1 12:00:00 2024");
        let value = DateTime::parse("2024-01-13T09:05:07-05:30").unwrap();
        assert_eq!(value.to_python_str(), "2024-01-13 09:05:07-05:30");
        assert_eq!(value.ctime(), "Sat Jan 13 09:05:07 2024");
        assert_eq!(
            DateTime::parse("2000-02-29 00:00:00Z").unwrap().ctime(),
            "Tue Feb 29 00:00:00 2000"
        );
        assert_eq!(
            DateTime::parse("2024-01-01 12:00:00+0100")
                .unwrap()
                .offset_seconds,
            3600
        );
    }

    #[test]
    fn ctime_text_reads_back() {
        let value = DateTime::parse("Tue Jan  2 12:05:00 2024").unwrap();
        assert_eq!(
            (value.year, value.month, value.day, value.hour, value.minute),
            (2024, 1, 2, 12, 5)
        );
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "2024-13-01 00:00:00",
            "2023-02-29 00:00:00",
            "yesterday",
            "2024-01-01 25:00:00",
        ] {
            assert!(DateTime::parse(text).is_err(), "{text}");
        }
    }
}
