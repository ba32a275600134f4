//! Parsing and printing of byte sizes (quotas).

use bytesize::ByteSize;

/// Parses a quota such as `10GiB`, `500 MB`, `4096` or `unlimited`.
/// Returns bytes; 0 means unlimited.
pub fn parse_quota(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty size".to_owned());
    }
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    if text.starts_with('-') {
        return Err(format!("size {text:?} is negative"));
    }
    let size: ByteSize = text
        .parse()
        .map_err(|e| format!("invalid size {text:?} (try e.g. 10GiB or 500MB): {e}"))?;
    if size.as_u64() == u64::MAX {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(size.as_u64())
}

/// Formats a quota for humans: `unlimited` for 0, else IEC units.
pub fn format_quota(bytes: u64) -> String {
    if bytes == 0 {
        "unlimited".to_owned()
    } else {
        format_bytes(bytes)
    }
}

/// Formats a byte count in IEC units (`1.5 GiB`).
pub fn format_bytes(bytes: u64) -> String {
    ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas() {
        assert_eq!(parse_quota("0"), Ok(0));
        assert_eq!(parse_quota("unlimited"), Ok(0));
        assert_eq!(parse_quota("4096"), Ok(4096));
        assert_eq!(parse_quota("10GiB"), Ok(10 << 30));
        assert_eq!(parse_quota("10 GiB"), Ok(10 << 30));
        assert_eq!(parse_quota(" 1KiB "), Ok(1024));
        assert_eq!(parse_quota("500MB"), Ok(500_000_000));
        assert_eq!(parse_quota("1.5KiB"), Ok(1536));
    }

    #[test]
    fn bad_quotas() {
        for bad in [
            "",
            "  ",
            "lots",
            "10XB",
            "-1",
            "-5GiB",
            "GiB",
            "99999999999999999999EiB",
        ] {
            assert!(parse_quota(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn printing() {
        assert_eq!(format_quota(0), "unlimited");
        assert_eq!(format_quota(10 << 30), "10.0 GiB");
        assert_eq!(format_bytes(512), "512 B");
    }
}
