//! Text and JSON renderings of volumes.

use crate::cli::Format;
use crate::size::{format_bytes, format_quota};
use cellfs_protocol::{Timestamp, VolumeInfo, VolumeKind};
use std::fmt::Write as _;

/// Renders a volume list.
pub fn volumes(list: &[VolumeInfo], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(list)? + "\n",
        Format::Text => {
            let mut rows: Vec<Vec<String>> = vec![
                ["NAME", "ID", "TYPE", "QUOTA", "USED", "FILES", "SERVER"]
                    .map(String::from)
                    .to_vec(),
            ];
            let mut sorted: Vec<&VolumeInfo> = list.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            for v in sorted {
                rows.push(vec![
                    v.name.clone(),
                    v.id.to_string(),
                    v.kind.short().to_owned(),
                    format_quota(v.quota),
                    format_bytes(v.used),
                    v.files.to_string(),
                    v.server.clone(),
                ]);
            }
            table(&rows)
        }
    })
}

/// Renders rows as left-aligned columns two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Renders one volume.
pub fn volume(v: &VolumeInfo, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(v)? + "\n",
        Format::Text => {
            let mut out = String::new();
            let never = || "never".to_owned();
            let _ = writeln!(out, "name:         {}", v.name);
            let _ = writeln!(out, "id:           {}", v.id);
            let _ = writeln!(out, "type:         {}", v.kind.short());
            if let Some(parent) = &v.parent {
                let _ = writeln!(out, "clone of:     {parent}");
            }
            let _ = writeln!(out, "server:       {}", v.server);
            let _ = writeln!(out, "sites:        {}", v.sites.join(", "));
            let _ = writeln!(out, "quota:        {}", format_quota(v.quota));
            let _ = writeln!(out, "used:         {} ({} bytes)", format_bytes(v.used), v.used);
            let _ = writeln!(out, "files:        {}", v.files);
            if let Some(d) = v.disk {
                let _ = writeln!(
                    out,
                    "server disk:  {} free of {}",
                    format_bytes(d.avail),
                    format_bytes(d.total)
                );
            }
            let _ = writeln!(out, "created:      {}", utc(v.created));
            let _ = writeln!(out, "last update:  {}", utc(v.updated));
            let _ = writeln!(out, "last release: {}", v.last_release.map(utc).unwrap_or_else(never));
            let _ = writeln!(out, "backup time:  {}", v.backup_time.map(utc).unwrap_or_else(never));
            match &v.lock {
                Some(l) => {
                    let _ = writeln!(out, "locked:       by {} since {}", l.holder, utc(l.since));
                }
                None => {
                    let _ = writeln!(out, "locked:       no");
                }
            }
            out
        }
    })
}

/// One volume group of the VLDB: a read-write volume and its clones.
#[derive(Debug, serde::Serialize)]
struct VldbEntry<'a> {
    name: &'a str,
    rw_id: u64,
    ro_id: Option<u64>,
    backup_id: Option<u64>,
    /// The read-write site first, then the read-only sites.
    sites: &'a [String],
    locked_by: Option<&'a str>,
    last_release: Option<Timestamp>,
}

/// Renders the VLDB from the volume list: one entry per read-write volume,
/// with the ids of its clones (found by their parent).
pub fn vldb(list: &[VolumeInfo], format: Format) -> anyhow::Result<String> {
    let clone_of = |v: &VolumeInfo, kind: VolumeKind| {
        list.iter()
            .find(|c| c.kind == kind && c.parent.as_deref() == Some(v.name.as_str()))
            .map(|c| c.id)
    };
    let mut entries: Vec<VldbEntry<'_>> = list
        .iter()
        .filter(|v| v.kind == VolumeKind::ReadWrite)
        .map(|v| VldbEntry {
            name: &v.name,
            rw_id: v.id,
            ro_id: clone_of(v, VolumeKind::ReadOnly),
            backup_id: clone_of(v, VolumeKind::Backup),
            sites: &v.sites,
            locked_by: v.lock.as_ref().map(|l| l.holder.as_str()),
            last_release: v.last_release,
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(b.name));
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&entries)? + "\n",
        Format::Text => {
            let mut out = String::new();
            let id = |i: Option<u64>| i.map_or_else(|| "-".to_owned(), |i| i.to_string());
            for e in &entries {
                let _ = writeln!(out, "{}", e.name);
                let _ = writeln!(
                    out,
                    "    RWrite: {}    ROnly: {}    Backup: {}",
                    e.rw_id,
                    id(e.ro_id),
                    id(e.backup_id)
                );
                let _ = writeln!(out, "    number of sites -> {}", e.sites.len());
                for (i, site) in e.sites.iter().enumerate() {
                    let _ = writeln!(out, "       server {site} {} site", if i == 0 { "RW" } else { "RO" });
                }
                if let Some(holder) = e.locked_by {
                    let _ = writeln!(out, "    locked by {holder}");
                }
            }
            out
        }
    })
}

/// Formats a timestamp as UTC `YYYY-MM-DD hh:mm:ss`.
pub fn utc(t: Timestamp) -> String {
    let days = t.secs.div_euclid(86_400);
    let secs = t.secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so that leap days end each 4/100/400-year cycle.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(name: &str, id: u64) -> VolumeInfo {
        VolumeInfo {
            id,
            name: name.into(),
            quota: 0,
            used: 2048,
            files: 3,
            server: "127.0.0.1:7000".into(),
            created: Timestamp { secs: 0, nanos: 0 },
            updated: Timestamp {
                secs: 951_782_400,
                nanos: 0,
            },
            kind: cellfs_protocol::VolumeKind::ReadWrite,
            parent: None,
            backup_time: None,
            lock: None,
            sites: vec!["127.0.0.1:7000".into()],
            last_release: None,
            disk: None,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc(Timestamp { secs: 0, nanos: 0 }), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(Timestamp {
                secs: 951_782_400,
                nanos: 0
            }),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            utc(Timestamp {
                secs: 1_700_000_000,
                nanos: 0
            }),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(utc(Timestamp { secs: -1, nanos: 0 }), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn text_list_is_aligned_and_sorted() {
        let text = volumes(&[vol("site.www", 2), vol("root.cell", 1)], Format::Text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME "));
        assert!(lines[1].starts_with("root.cell "));
        assert!(lines[2].starts_with("site.www "));
        assert!(lines[1].contains("unlimited") && lines[1].contains("2.0 KiB"));
        assert_eq!(lines[0].find("ID"), lines[1].find('1'));
    }

    #[test]
    fn examine_shows_the_server_disk_when_known() {
        let mut v = vol("site.www", 2);
        assert!(!volume(&v, Format::Text).unwrap().contains("server disk"));
        v.disk = Some(cellfs_protocol::DiskSpace {
            total: 100 << 30,
            avail: 5 << 30,
        });
        let text = volume(&v, Format::Text).unwrap();
        assert!(text.contains("server disk:  5.0 GiB free of 100.0 GiB"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&volume(&v, Format::Json).unwrap()).unwrap();
        assert_eq!(json["disk"]["avail"], 5u64 << 30);
    }

    #[test]
    fn json_round_trips() {
        let list = vec![vol("root.cell", 1)];
        let text = volumes(&list, Format::Json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back[0]["name"], "root.cell");
        assert_eq!(back[0]["used"], 2048);
        let one: serde_json::Value = serde_json::from_str(&volume(&list[0], Format::Json).unwrap()).unwrap();
        assert_eq!(one["id"], 1);
    }
}
