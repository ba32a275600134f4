//! Volume administration costs (issue 4): a volume of N small files (default
//! 100,000 in 100 folders) is restored from a synthetic dump, then
//! `cellfs-vos backup` clones it (target: well under a second at 100,000
//! files), a dump of it is taken, and the disk growth of the clone is shown.
//! The native reference is `cp -a` of the volume's folder on the same disk.
//!
//! `cargo bench --bench volumes [-- --files N]` (build the workspace in release first).

use cellfs::Cell;
use cellfs_fileserver::dump::{DumpHeader, DumpWriter};
use cellfs_fileserver::schema::{VnodeRecord, VolumeState};
use cellfs_protocol::{FileKind, Timestamp};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const DIRS: u64 = 100;

/// Writes a dump of a volume with `n` files of 64 bytes in `DIRS` folders.
fn synthetic_dump(path: &Path, n: u64) {
    let now = Timestamp::now();
    let header = DumpHeader {
        volume: "bench".into(),
        source_id: 0,
        made: now,
        since: None,
        quota: 0,
        state: VolumeState {
            next_vnode: 2 + DIRS + n,
            next_unique: 2 + DIRS + n,
            used: 64 * n,
            files: 1 + DIRS + n,
            updated: now,
        },
    };
    let out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = DumpWriter::new(out, header).unwrap();
    let mut root = VnodeRecord::new(FileKind::Dir, 0o755, (0, 0), 1, 1, now);
    root.nlink = 2 + DIRS as u32;
    w.vnode(1, &root, None).unwrap();
    for d in 0..DIRS {
        let vnode = 2 + d;
        let dir = VnodeRecord::new(FileKind::Dir, 0o755, (0, 0), vnode, 1, now);
        w.vnode(vnode, &dir, None).unwrap();
        w.entry(1, &format!("d{d:03}"), vnode, vnode).unwrap();
    }
    let body = [b'x'; 64];
    for i in 0..n {
        let vnode = 2 + DIRS + i;
        let mut rec = VnodeRecord::new(FileKind::File, 0o644, (33, 33), vnode, 0, now);
        rec.size = body.len() as u64;
        rec.data_file = 1;
        w.vnode(vnode, &rec, Some(&mut body.as_slice())).unwrap();
        w.entry(2 + i % DIRS, &format!("f{i:06}.php"), vnode, vnode).unwrap();
    }
    w.finish().unwrap();
}

fn du(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sB1").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut files = 100_000u64;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--files") {
        files = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(files);
    }
    let cell = Cell::new();
    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("bench.dump");
    let t = Instant::now();
    synthetic_dump(&dump, files);
    println!("wrote a dump of {files} files in {:.2?}", t.elapsed());

    let t = Instant::now();
    cell.vos_ok(["restore", "bench", "--file", dump.to_str().unwrap()]);
    println!("restore: {:.2?}", t.elapsed());
    let info: serde_json::Value = serde_json::from_str(&cell.vos_ok(["examine", "bench", "--format", "json"])).unwrap();
    let id = info["id"].as_u64().unwrap();
    let vol_dir = cell.data_dir().join("volumes").join(id.to_string());

    let before = du(&cell.data_dir().join("volumes"));
    let mut backup = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        cell.vos_ok(["backup", "bench"]);
        backup.push(t.elapsed());
    }
    let after = du(&cell.data_dir().join("volumes"));

    let native = work.path().join("native-copy");
    let t = Instant::now();
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&vol_dir)
        .arg(&native)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a failed");
    let _ = Command::new("sync").status();
    let native_copy = t.elapsed();

    let t = Instant::now();
    cell.vos_ok([
        "dump",
        "bench",
        "--file",
        work.path().join("again.dump").to_str().unwrap(),
    ]);
    let dump_time = t.elapsed();

    // Two servers: move the volume over and back, then release it to
    // read-only sites on both (a full copy sent to the second).
    let second = cell.join();
    let (s1, s2) = (cell.addr().to_string(), second.addr().to_string());
    cell.vos_ok(["remove", "bench.backup"]);
    let t = Instant::now();
    cell.vos_ok(["move", "bench", "--to", &s2]);
    let move_time = t.elapsed();
    let t = Instant::now();
    cell.vos_ok(["move", "bench", "--to", &s1]);
    let move_back = t.elapsed();
    cell.vos_ok(["addsite", "bench", &s1]);
    cell.vos_ok(["addsite", "bench", &s2]);
    let t = Instant::now();
    cell.vos_ok(["release", "bench"]);
    let release_time = t.elapsed();

    backup.sort();
    let median = backup[1];
    println!();
    println!("| {files} files | cellfs | native `cp -a` of the volume folder | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| `vos backup` (median of 3, whole command) | {:.0} ms | {:.0} ms | {:.2}× |",
        median.as_secs_f64() * 1e3,
        native_copy.as_secs_f64() * 1e3,
        median.as_secs_f64() / native_copy.as_secs_f64()
    );
    println!(
        "| disk growth of the clone | {:.1} MiB | {:.1} MiB | |",
        after.saturating_sub(before) as f64 / 1048576.0,
        du(&native) as f64 / 1048576.0
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let native_ms = ms(native_copy);
    println!("| `vos dump` of the volume | {:.0} ms | | |", ms(dump_time));
    for (what, d) in [
        ("`vos move` to a second server", move_time),
        ("`vos move` back", move_back),
        ("`vos release` to sites on both servers", release_time),
    ] {
        println!(
            "| {what} | {:.0} ms | {native_ms:.0} ms | {:.2}× |",
            ms(d),
            ms(d) / native_ms
        );
    }
    // How long writers waited during each move (the servers log it).
    for log in [cell.log(), second.log()] {
        for line in log.lines().filter(|l| l.contains("moved volume")) {
            let plain = strip_colors(line);
            let waited = plain.split("writers_waited=").nth(1).unwrap_or("?");
            println!("move: writers waited {}", waited.trim());
        }
    }
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
