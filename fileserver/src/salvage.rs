//! The salvager (`cellfs-fileserver salvage`): checks every volume's redb
//! metadata against its data folder, like the AFS salvager, and with
//! `repair` fixes what it finds.
//!
//! It holds the data folder lock (see [`crate::lock`]), so it never runs
//! beside a server on the same folder. Each volume is read in one read
//! transaction; the whole check runs on an in-memory model that is fixed as
//! problems are found, so the report of a check and of a repair list the
//! same problems. A repair then writes the difference between the stored and
//! the fixed model in one write transaction per volume: every vnode whose
//! record or entries changed gets a new data version, and every fix is
//! logged to the volume's change journal (one entry per problem) so clients
//! revalidate what it touched. Orphan data files are deleted after that
//! commit. Finally the volume is checked again and what remains is reported.
//!
//! What is checked, in order, and how it is repaired:
//! - the vnode/uniquifier counters must be beyond every vnode: raised;
//! - the root (vnode 1, uniquifier 1) must be a directory whose parent is
//!   itself: recreated empty (a non-directory in its place is dropped) or fixed;
//! - each file's committed data file `data/<vnode>.<data_file>` must exist
//!   when the size is not 0 and hold exactly `size` bytes: the size is set to
//!   the real length, or to 0 when the file is missing (the data file is the
//!   authority for content);
//! - every other file in `data/` is an orphan: deleted;
//! - entries in a vnode that is not a directory: dropped;
//! - entries naming a missing vnode: dropped; naming an existing vnode with
//!   another uniquifier: the entry takes the vnode's uniquifier (vnode
//!   numbers are never reused, so the number identifies the vnode);
//! - entries naming the root, and second links to a directory: dropped (the
//!   link in the directory's recorded parent is kept); a directory's parent
//!   must be the directory naming it: set;
//! - vnodes not reachable from the root (orphans) are reattached, never
//!   deleted, in `/lost+found` (created mode 0700 if missing) as
//!   `orphan.<vnode>.<uniquifier>`: only the top of each orphan subtree is
//!   linked; a directory cycle is cut at its lowest vnode;
//! - link counts: a non-directory has one per entry naming it, a directory
//!   2 + its subdirectories: set;
//! - a directory's size is 32 bytes per entry: set;
//! - the volume's used bytes (sum of file sizes) and file count (vnodes): set.
//!
//! At the cell level, volume folders the VLDB does not know are reported
//! (and deleted on repair, as `serve` would), and volumes whose metadata
//! cannot be opened are reported (not repairable here).

use crate::config::{ConfigError, DEFAULT_JOURNAL_LEN, SERVER_TOML, ServerConfig};
use crate::error::{FsError, FsResult};
use crate::lock::{DataLock, LockError};
use crate::schema::{VnodeRecord, VolumeState};
use crate::store::{Store, VOLUMES_DIR};
use crate::volume::{DIR_ENTRY_SIZE, Volume, data_name, parse_data_name, sync_dir};
use cellfs_protocol::{Fid, FileKind, Timestamp, VolumeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the directory orphan vnodes are reattached in.
pub const LOST_FOUND: &str = "lost+found";

/// What the salvager is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct SalvageOptions {
    /// Fix what is found (otherwise only report).
    pub repair: bool,
}

/// The classes of damage the salvager knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    /// A file in `data/` that is no vnode's committed data.
    OrphanDataFile,
    /// A file's committed data file is missing.
    MissingDataFile,
    /// A file's committed data file's length differs from its size.
    WrongDataLength,
    /// A directory entry names a vnode that does not exist.
    DanglingEntry,
    /// A directory entry's uniquifier differs from its vnode's.
    WrongUniquifier,
    /// Entries stored under a vnode that is not a directory.
    EntryOutsideDirectory,
    /// A second entry naming a directory, or an entry naming the root.
    ExtraDirectoryLink,
    /// A directory's recorded parent is not the directory naming it.
    WrongParent,
    /// A vnode not reachable from the root.
    OrphanVnode,
    /// A link count that disagrees with the entries.
    WrongLinkCount,
    /// A directory size that disagrees with its entries.
    WrongDirectorySize,
    /// Used bytes, file count or the allocation counters are wrong.
    WrongAccounting,
    /// The root directory is missing or not a directory.
    BadRoot,
    /// A volume folder the VLDB does not know.
    UnknownVolumeFolder,
    /// A volume whose metadata cannot be opened (not repairable here).
    UnreadableVolume,
}

/// One problem found (and, on repair, fixed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which class.
    pub kind: ProblemKind,
    /// What exactly, and what the repair does.
    pub detail: String,
    /// FIDs the repair of this problem changes (logged to the journal).
    pub fids: Vec<Fid>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

/// The outcome for one volume.
#[derive(Debug, Clone)]
pub struct VolumeReport {
    /// Volume id.
    pub id: VolumeId,
    /// Volume name.
    pub name: String,
    /// Problems found.
    pub found: Vec<Problem>,
    /// True when the fixes were written.
    pub repaired: bool,
    /// Problems a check after the repair still finds (empty without repair).
    pub remaining: Vec<Problem>,
}

/// The outcome for the whole data folder.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// Cell-level problems (unknown folders, unreadable volumes).
    pub cell: Vec<Problem>,
    /// Cell-level problems left after repair.
    pub cell_remaining: Vec<Problem>,
    /// Per volume, by id.
    pub volumes: Vec<VolumeReport>,
    /// True when repairs were asked for.
    pub repair: bool,
}

impl SalvageReport {
    /// True when anything was found.
    pub fn found_any(&self) -> bool {
        !self.cell.is_empty() || self.volumes.iter().any(|v| !v.found.is_empty())
    }

    /// True when nothing is wrong now: nothing found, or (on repair) nothing left.
    pub fn clean_now(&self) -> bool {
        if self.repair {
            self.cell_remaining.is_empty() && self.volumes.iter().all(|v| v.remaining.is_empty())
        } else {
            !self.found_any()
        }
    }

    /// Number of problems found of `kind`, over all volumes.
    pub fn count(&self, kind: ProblemKind) -> usize {
        self.cell
            .iter()
            .chain(self.volumes.iter().flat_map(|v| v.found.iter()))
            .filter(|p| p.kind == kind)
            .count()
    }
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.repair { "fixed" } else { "found" };
        for p in &self.cell {
            writeln!(f, "cell: {verb}: {p}")?;
        }
        for p in &self.cell_remaining {
            writeln!(f, "cell: REMAINS: {p}")?;
        }
        for v in &self.volumes {
            if v.found.is_empty() {
                writeln!(f, "volume {} ({}): clean", v.id, v.name)?;
                continue;
            }
            writeln!(f, "volume {} ({}): {} problem(s)", v.id, v.name, v.found.len())?;
            for p in &v.found {
                writeln!(f, "  {verb}: {p}")?;
            }
            if self.repair {
                if v.remaining.is_empty() {
                    writeln!(f, "  after repair: clean")?;
                }
                for p in &v.remaining {
                    writeln!(f, "  REMAINS: {p}")?;
                }
            }
        }
        let total: usize = self.cell.len() + self.volumes.iter().map(|v| v.found.len()).sum::<usize>();
        match (total, self.repair, self.clean_now()) {
            (0, _, _) => writeln!(f, "salvage: {} volume(s), all clean", self.volumes.len()),
            (n, false, _) => writeln!(f, "salvage: {n} problem(s) found; run with --repair to fix them"),
            (n, true, true) => writeln!(f, "salvage: {n} problem(s) repaired; all clean now"),
            (n, true, false) => writeln!(f, "salvage: {n} problem(s) found; some remain after repair"),
        }
    }
}

/// Why the salvager could not run.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// A server or another salvager holds the folder.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// `server.toml` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VLDB or a volume could not be read or written.
    #[error("{0}")]
    Store(#[from] FsError),
}

/// Checks (and with `opts.repair` repairs) every volume in `data_dir`.
pub fn salvage(data_dir: &Path, opts: &SalvageOptions) -> Result<SalvageReport, SalvageError> {
    let _lock = DataLock::acquire(data_dir)?;
    let journal_len = if data_dir.join(SERVER_TOML).exists() {
        ServerConfig::load(data_dir)?.journal_len
    } else {
        DEFAULT_JOURNAL_LEN
    };
    let headers = Store::list_headers(data_dir)?;
    let vols_dir = data_dir.join(VOLUMES_DIR);
    let mut report = SalvageReport {
        repair: opts.repair,
        ..SalvageReport::default()
    };
    let known: BTreeSet<String> = headers.iter().map(|(id, _)| id.to_string()).collect();
    if let Ok(rd) = std::fs::read_dir(&vols_dir) {
        for entry in rd {
            let entry = entry.map_err(FsError::from)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            report.cell.push(Problem {
                kind: ProblemKind::UnknownVolumeFolder,
                detail: format!("{} is no volume of the VLDB; removed", entry.path().display()),
                fids: Vec::new(),
            });
            if opts.repair {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(FsError::from)?;
            }
        }
    }
    // Every volume is opened and clones linked to their volumes before any
    // check: a clone reads data files from its volume's folder.
    let admin = Store::list_admin(data_dir)?;
    let mut opened = Vec::new();
    for (id, header) in headers {
        let dir = vols_dir.join(id.to_string());
        let vol = Volume::open_no_cleanup(&dir, id, header.quota, journal_len).map(Arc::new);
        opened.push((id, header, dir, vol));
    }
    for (id, _, _, vol) in &opened {
        let parent = admin.get(id).and_then(|a| a.parent);
        let parent = opened.iter().find(|(pid, ..)| Some(*pid) == parent);
        if let (Ok(vol), Some((_, _, _, Ok(parent)))) = (vol, parent) {
            vol.set_clone_of(parent);
            parent.add_clone(vol.clone());
        }
    }
    for (id, header, dir, vol) in opened {
        let vol = match vol {
            Ok(v) => v,
            Err(e) => {
                let p = Problem {
                    kind: ProblemKind::UnreadableVolume,
                    detail: format!("volume {id} ({}) in {}: {e}", header.name, dir.display()),
                    fids: Vec::new(),
                };
                report.cell.push(p.clone());
                report.cell_remaining.push(p);
                continue;
            }
        };
        let found = check_volume(&vol)?;
        let mut v = VolumeReport {
            id,
            name: header.name,
            found: found.problems.clone(),
            repaired: false,
            remaining: Vec::new(),
        };
        if opts.repair && !found.problems.is_empty() {
            apply(&vol, &found)?;
            v.repaired = true;
            v.remaining = check_volume(&vol)?.problems;
        }
        report.volumes.push(v);
    }
    Ok(report)
}

/// A volume as the check sees it.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    vnodes: BTreeMap<u64, VnodeRecord>,
    entries: BTreeMap<(u64, String), (u64, u64)>,
    state: VolumeState,
}

/// A file in a volume's `data/` folder.
#[derive(Debug, Clone)]
struct DataFile {
    path: PathBuf,
    len: u64,
    is_dir: bool,
}

/// The result of checking one volume: the stored model, the fixed one, and
/// the problems that lead from one to the other.
#[derive(Debug)]
struct Checked {
    before: Model,
    after: Model,
    problems: Vec<Problem>,
    orphan_files: Vec<DataFile>,
}

fn load(vol: &Volume) -> FsResult<(Model, BTreeMap<String, DataFile>)> {
    let r = vol.read_view()?;
    let vnodes = r.all_vnodes()?.into_iter().collect();
    let entries = r
        .all_entries()?
        .into_iter()
        .map(|(d, n, v, u)| ((d, n), (v, u)))
        .collect();
    let state = r.state()?;
    let mut files = BTreeMap::new();
    match std::fs::read_dir(vol.dir().join("data")) {
        Ok(rd) => {
            for entry in rd {
                let entry = entry?;
                let meta = entry.metadata()?;
                files.insert(
                    entry.file_name().to_string_lossy().into_owned(),
                    DataFile {
                        path: entry.path(),
                        len: meta.len(),
                        is_dir: meta.is_dir(),
                    },
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    // A clone's files may still live in its volume's folder; a volume's
    // retired files its clone still names are the clone's, not orphans.
    if vol.is_clone() {
        let vnodes: &BTreeMap<u64, VnodeRecord> = &vnodes;
        for (v, rec) in vnodes.iter().filter(|(_, r)| r.kind == FileKind::File && r.size > 0) {
            let name = data_name(*v, rec.data_file);
            if files.contains_key(&name) {
                continue;
            }
            if let Some(path) = vol.locate_data_file(*v, rec.data_file) {
                let len = std::fs::metadata(&path)?.len();
                files.insert(
                    name,
                    DataFile {
                        path,
                        len,
                        is_dir: false,
                    },
                );
            }
        }
    }
    let clones = vol.clones();
    if !clones.is_empty() {
        files.retain(|name, _| {
            !parse_data_name(name).is_some_and(|(v, d)| clones.iter().any(|c| c.names_data_file(v, d)))
        });
    }
    Ok((Model { vnodes, entries, state }, files))
}

fn check_volume(vol: &Volume) -> FsResult<Checked> {
    let (before, files) = load(vol)?;
    let mut c = Checker {
        volume: vol.id(),
        m: before.clone(),
        problems: Vec::new(),
        now: Timestamp::now(),
    };
    c.counters();
    c.root();
    let orphan_files = c.data_files(&files);
    c.entries();
    c.directory_links();
    c.orphans();
    c.link_counts();
    c.accounting();
    Ok(Checked {
        before,
        after: c.m,
        problems: c.problems,
        orphan_files,
    })
}

struct Checker {
    volume: VolumeId,
    m: Model,
    problems: Vec<Problem>,
    now: Timestamp,
}

impl Checker {
    fn fid(&self, vnode: u64) -> Fid {
        Fid {
            volume: self.volume,
            vnode,
            unique: self.m.vnodes.get(&vnode).map_or(0, |r| r.unique),
        }
    }

    fn report(&mut self, kind: ProblemKind, detail: String, vnodes: &[u64]) {
        let fids = vnodes
            .iter()
            .filter(|v| self.m.vnodes.contains_key(v))
            .map(|&v| self.fid(v))
            .collect();
        self.problems.push(Problem { kind, detail, fids });
    }

    fn counters(&mut self) {
        let max_vnode = self.m.vnodes.keys().next_back().copied().unwrap_or(0);
        let max_unique = self.m.vnodes.values().map(|r| r.unique).max().unwrap_or(0);
        let st = &mut self.m.state;
        if st.next_vnode <= max_vnode || st.next_unique <= max_unique {
            let detail = format!(
                "next vnode/uniquifier {}/{} not beyond the highest in use {max_vnode}/{max_unique}; raised",
                st.next_vnode, st.next_unique
            );
            st.next_vnode = st.next_vnode.max(max_vnode + 1);
            st.next_unique = st.next_unique.max(max_unique + 1);
            self.report(ProblemKind::WrongAccounting, detail, &[]);
        }
    }

    fn new_dir(&self, mode: u32, unique: u64, parent: u64) -> VnodeRecord {
        VnodeRecord::new(FileKind::Dir, mode, (0, 0), unique, parent, self.now)
    }

    fn root(&mut self) {
        let root = Fid::ROOT_VNODE;
        match self.m.vnodes.get(&root).cloned() {
            Some(rec) if rec.kind == FileKind::Dir => {
                if rec.unique != 1 || rec.parent != root {
                    let detail = format!(
                        "root directory has uniquifier {} and parent {} (want 1 and 1); fixed",
                        rec.unique, rec.parent
                    );
                    if let Some(r) = self.m.vnodes.get_mut(&root) {
                        r.unique = 1;
                        r.parent = root;
                    }
                    self.report(ProblemKind::BadRoot, detail, &[root]);
                }
            }
            other => {
                let detail = match other {
                    Some(rec) => format!(
                        "vnode 1 is a {:?}, not the root directory; replaced by an empty root",
                        rec.kind
                    ),
                    None => "the root directory is missing; recreated empty".to_owned(),
                };
                let rec = self.new_dir(0o755, 1, root);
                self.m.vnodes.insert(root, rec);
                self.report(ProblemKind::BadRoot, detail, &[root]);
            }
        }
    }

    fn data_files(&mut self, files: &BTreeMap<String, DataFile>) -> Vec<DataFile> {
        let mut referenced = BTreeSet::new();
        let file_vnodes: Vec<u64> = self
            .m
            .vnodes
            .iter()
            .filter(|(_, r)| r.kind == FileKind::File)
            .map(|(v, _)| *v)
            .collect();
        for v in file_vnodes {
            let Some(rec) = self.m.vnodes.get(&v) else { continue };
            let (size, name) = (rec.size, data_name(v, rec.data_file));
            let real = files.get(&name).filter(|f| !f.is_dir);
            if real.is_some() {
                referenced.insert(name.clone());
            }
            let fix = match real {
                None if size > 0 => Some((
                    ProblemKind::MissingDataFile,
                    format!("file vnode {v} of {size} bytes has no data file data/{name}; size set to 0"),
                    0,
                )),
                Some(f) if f.len != size => Some((
                    ProblemKind::WrongDataLength,
                    format!(
                        "file vnode {v} records {size} bytes but data/{name} holds {}; size set to {}",
                        f.len, f.len
                    ),
                    f.len,
                )),
                _ => None,
            };
            if let Some((kind, detail, new_size)) = fix {
                if let Some(r) = self.m.vnodes.get_mut(&v) {
                    r.size = new_size;
                }
                self.report(kind, detail, &[v]);
            }
        }
        let mut orphans = Vec::new();
        for (name, f) in files {
            if !referenced.contains(name) {
                let detail = format!("data/{name} ({} bytes) is no file's committed data; deleted", f.len);
                self.report(ProblemKind::OrphanDataFile, detail, &[]);
                orphans.push(f.clone());
            }
        }
        orphans
    }

    /// Removes an entry and keeps the directory's size and link counts consistent.
    fn drop_entry(&mut self, dir: u64, name: &str) {
        let Some((vnode, _)) = self.m.entries.remove(&(dir, name.to_owned())) else {
            return;
        };
        let child_is_dir = self.m.vnodes.get(&vnode).map(|r| r.kind == FileKind::Dir);
        if let Some(d) = self.m.vnodes.get_mut(&dir).filter(|d| d.kind == FileKind::Dir) {
            d.size = d.size.saturating_sub(DIR_ENTRY_SIZE);
            if child_is_dir == Some(true) {
                d.nlink = d.nlink.saturating_sub(1);
            }
        }
        if child_is_dir == Some(false)
            && let Some(c) = self.m.vnodes.get_mut(&vnode)
        {
            c.nlink = c.nlink.saturating_sub(1);
        }
    }

    fn entries(&mut self) {
        let keys: Vec<((u64, String), (u64, u64))> = self.m.entries.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for ((dir, name), (vnode, unique)) in keys {
            let dir_ok = self.m.vnodes.get(&dir).is_some_and(|r| r.kind == FileKind::Dir);
            if !dir_ok {
                let detail = format!("entry {name:?} -> {vnode} is stored under vnode {dir}, not a directory; dropped");
                self.m.entries.remove(&(dir, name));
                self.report(ProblemKind::EntryOutsideDirectory, detail, &[dir]);
                continue;
            }
            match self.m.vnodes.get(&vnode).map(|r| (r.unique, r.kind)) {
                None => {
                    let detail = format!("entry {name:?} in directory {dir} names missing vnode {vnode}; dropped");
                    self.drop_entry(dir, &name);
                    self.report(ProblemKind::DanglingEntry, detail, &[dir]);
                }
                Some((real, _)) if real != unique => {
                    let detail = format!(
                        "entry {name:?} in directory {dir} names {vnode}.{unique} but the vnode's uniquifier is {real}; entry fixed"
                    );
                    self.m.entries.insert((dir, name), (vnode, real));
                    self.report(ProblemKind::WrongUniquifier, detail, &[dir, vnode]);
                }
                Some(_) => {}
            }
        }
    }

    fn directory_links(&mut self) {
        let mut links: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        for ((dir, name), (vnode, _)) in &self.m.entries {
            if self.m.vnodes.get(vnode).is_some_and(|r| r.kind == FileKind::Dir) {
                links.entry(*vnode).or_default().push((*dir, name.clone()));
            }
        }
        for (vnode, mut named) in links {
            if vnode == Fid::ROOT_VNODE {
                for (dir, name) in named {
                    let detail = format!("entry {name:?} in directory {dir} names the root; dropped");
                    self.drop_entry(dir, &name);
                    self.report(ProblemKind::ExtraDirectoryLink, detail, &[dir]);
                }
                continue;
            }
            let parent = self.m.vnodes.get(&vnode).map_or(0, |r| r.parent);
            let keep = named.iter().position(|(d, _)| *d == parent).unwrap_or(0);
            let (kept_dir, kept_name) = named.swap_remove(keep);
            for (dir, name) in named {
                let detail = format!(
                    "directory {vnode} is also named {name:?} in directory {dir} (kept {kept_name:?} in {kept_dir}); dropped"
                );
                self.drop_entry(dir, &name);
                self.report(ProblemKind::ExtraDirectoryLink, detail, &[dir, vnode]);
            }
            if parent != kept_dir {
                let detail = format!("directory {vnode} records parent {parent} but is named in {kept_dir}; fixed");
                if let Some(r) = self.m.vnodes.get_mut(&vnode) {
                    r.parent = kept_dir;
                }
                self.report(ProblemKind::WrongParent, detail, &[vnode]);
            }
        }
    }

    fn unreachable(&self) -> BTreeSet<u64> {
        let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for ((dir, _), (vnode, _)) in &self.m.entries {
            children.entry(*dir).or_default().push(*vnode);
        }
        let mut seen = BTreeSet::from([Fid::ROOT_VNODE]);
        let mut queue = VecDeque::from([Fid::ROOT_VNODE]);
        while let Some(d) = queue.pop_front() {
            for &c in children.get(&d).into_iter().flatten() {
                if seen.insert(c) && self.m.vnodes.get(&c).is_some_and(|r| r.kind == FileKind::Dir) {
                    queue.push_back(c);
                }
            }
        }
        self.m.vnodes.keys().filter(|v| !seen.contains(v)).copied().collect()
    }

    /// The lost+found directory, created in the root if needed.
    fn lost_found(&mut self) -> u64 {
        let root = Fid::ROOT_VNODE;
        let mut name = LOST_FOUND.to_owned();
        for n in 1u64.. {
            match self.m.entries.get(&(root, name.clone())) {
                Some((v, _)) if self.m.vnodes.get(v).is_some_and(|r| r.kind == FileKind::Dir) => return *v,
                Some(_) => name = format!("{LOST_FOUND}.{n}"),
                None => break,
            }
        }
        let (vnode, unique) = (self.m.state.next_vnode, self.m.state.next_unique);
        self.m.state.next_vnode += 1;
        self.m.state.next_unique += 1;
        let rec = self.new_dir(0o700, unique, root);
        self.m.vnodes.insert(vnode, rec);
        self.m.entries.insert((root, name), (vnode, unique));
        if let Some(r) = self.m.vnodes.get_mut(&root) {
            r.size += DIR_ENTRY_SIZE;
            r.nlink += 1;
        }
        vnode
    }

    fn orphans(&mut self) {
        let mut rounds = 0usize;
        loop {
            let lost = self.unreachable();
            if lost.is_empty() || rounds > self.m.vnodes.len() {
                return;
            }
            rounds += 1;
            let named: BTreeSet<u64> = self.m.entries.values().map(|(v, _)| *v).collect();
            let mut tops: Vec<u64> = lost.iter().filter(|v| !named.contains(v)).copied().collect();
            if tops.is_empty() {
                // Only directory cycles are left: cut the lowest one loose.
                let Some(&cut) = lost.iter().next() else { return };
                let names: Vec<(u64, String)> = self
                    .m
                    .entries
                    .iter()
                    .filter(|(_, (v, _))| *v == cut)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (dir, name) in names {
                    self.drop_entry(dir, &name);
                }
                tops.push(cut);
            }
            let lf = self.lost_found();
            for v in tops {
                let Some(rec) = self.m.vnodes.get(&v).cloned() else {
                    continue;
                };
                let base = format!("orphan.{v}.{}", rec.unique);
                let mut name = base.clone();
                let mut n = 1u64;
                while self.m.entries.contains_key(&(lf, name.clone())) {
                    name = format!("{base}.{n}");
                    n += 1;
                }
                self.m.entries.insert((lf, name.clone()), (v, rec.unique));
                let is_dir = rec.kind == FileKind::Dir;
                if let Some(d) = self.m.vnodes.get_mut(&lf) {
                    d.size += DIR_ENTRY_SIZE;
                    if is_dir {
                        d.nlink += 1;
                    }
                }
                if let Some(r) = self.m.vnodes.get_mut(&v) {
                    if is_dir {
                        r.parent = lf;
                    } else {
                        r.nlink = r.nlink.saturating_add(1);
                    }
                }
                let detail = format!(
                    "{:?} vnode {v} is not reachable from the root; reattached as /{LOST_FOUND}/{name}",
                    rec.kind
                );
                self.report(ProblemKind::OrphanVnode, detail, &[v, lf]);
            }
        }
    }

    fn link_counts(&mut self) {
        let mut names: BTreeMap<u64, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut count: BTreeMap<u64, u64> = BTreeMap::new();
        for ((dir, _), (vnode, _)) in &self.m.entries {
            *names.entry(*vnode).or_default() += 1;
            *count.entry(*dir).or_default() += 1;
            if self.m.vnodes.get(vnode).is_some_and(|r| r.kind == FileKind::Dir) {
                *subdirs.entry(*dir).or_default() += 1;
            }
        }
        let vnodes: Vec<u64> = self.m.vnodes.keys().copied().collect();
        for v in vnodes {
            let Some(rec) = self.m.vnodes.get(&v) else { continue };
            let is_dir = rec.kind == FileKind::Dir;
            let want = if is_dir {
                2 + subdirs.get(&v).copied().unwrap_or(0)
            } else {
                names.get(&v).copied().unwrap_or(0)
            };
            if rec.nlink != want {
                let detail = format!(
                    "{:?} vnode {v} has link count {} but {want} links; fixed",
                    rec.kind, rec.nlink
                );
                if let Some(r) = self.m.vnodes.get_mut(&v) {
                    r.nlink = want;
                }
                self.report(ProblemKind::WrongLinkCount, detail, &[v]);
            }
            let Some(rec) = self.m.vnodes.get(&v) else { continue };
            let size = count.get(&v).copied().unwrap_or(0) * DIR_ENTRY_SIZE;
            if is_dir && rec.size != size {
                let detail = format!("directory {v} has size {} but {size} for its entries; fixed", rec.size);
                if let Some(r) = self.m.vnodes.get_mut(&v) {
                    r.size = size;
                }
                self.report(ProblemKind::WrongDirectorySize, detail, &[v]);
            }
        }
    }

    fn accounting(&mut self) {
        let files = self.m.vnodes.len() as u64;
        let used: u64 = self
            .m
            .vnodes
            .values()
            .filter(|r| r.kind == FileKind::File)
            .map(|r| r.size)
            .sum();
        let st = &mut self.m.state;
        if st.files != files || st.used != used {
            let detail = format!(
                "volume counts {} vnodes and {} bytes but holds {files} and {used}; fixed",
                st.files, st.used
            );
            st.files = files;
            st.used = used;
            self.report(ProblemKind::WrongAccounting, detail, &[]);
        }
    }
}

/// Writes the fixed model in one transaction: changed vnodes get a new data
/// version, each problem's FIDs are journaled; then orphan files are deleted.
fn apply(vol: &Volume, c: &Checked) -> FsResult<()> {
    let (before, after) = (&c.before, &c.after);
    let mut touched: BTreeSet<u64> = BTreeSet::new();
    for (v, rec) in &after.vnodes {
        if before.vnodes.get(v) != Some(rec) {
            touched.insert(*v);
        }
    }
    let mut entries_changed: BTreeSet<u64> = BTreeSet::new();
    for (k, val) in &before.entries {
        if after.entries.get(k) != Some(val) {
            entries_changed.insert(k.0);
        }
    }
    for (k, val) in &after.entries {
        if before.entries.get(k) != Some(val) {
            entries_changed.insert(k.0);
        }
    }
    let removed: Vec<(u64, &VnodeRecord)> = before
        .vnodes
        .iter()
        .filter(|(v, _)| !after.vnodes.contains_key(v))
        .map(|(v, r)| (*v, r))
        .collect();
    let journal_len = vol.journal_len();
    let id = vol.id();
    vol.write_raw(|t| {
        let mut logged: BTreeSet<Fid> = BTreeSet::new();
        let mut all: Vec<Fid> = Vec::new();
        for v in touched.iter().chain(entries_changed.iter()) {
            let Some(rec) = after.vnodes.get(v) else { continue };
            let mut rec = rec.clone();
            if let Some(old) = before.vnodes.get(v) {
                rec.data_version = rec.data_version.max(old.data_version) + 1;
            }
            rec.ctime = t.now;
            if entries_changed.contains(v) {
                rec.mtime = t.now;
            }
            t.put(*v, &rec)?;
            all.push(Fid {
                volume: id,
                vnode: *v,
                unique: rec.unique,
            });
        }
        for (v, rec) in &removed {
            t.remove_record(*v)?;
            all.push(Fid {
                volume: id,
                vnode: *v,
                unique: rec.unique,
            });
        }
        for (k, val) in &before.entries {
            if after.entries.get(k) != Some(val) {
                t.unlink(k.0, &k.1)?;
            }
        }
        for (k, val) in &after.entries {
            if before.entries.get(k) != Some(val) {
                t.link(k.0, &k.1, val.0, val.1)?;
            }
        }
        t.state = after.state.clone();
        for p in &c.problems {
            if !p.fids.is_empty() {
                t.log_change(p.fids.iter().copied(), journal_len)?;
                logged.extend(p.fids.iter().copied());
            }
        }
        let rest: Vec<Fid> = all.into_iter().filter(|f| !logged.contains(f)).collect();
        if !rest.is_empty() {
            t.log_change(rest, journal_len)?;
        }
        Ok(())
    })?;
    let data = vol.dir().join("data");
    for f in &c.orphan_files {
        let gone = if f.is_dir {
            std::fs::remove_dir_all(&f.path)
        } else {
            std::fs::remove_file(&f.path)
        };
        match gone {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !c.orphan_files.is_empty() {
        sync_dir(&data)?;
    }
    tracing::info!(volume = id, problems = c.problems.len(), "salvage repaired the volume");
    Ok(())
}
