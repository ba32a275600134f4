//! File content: opening a file for `FetchData`, and the copy-on-write store
//! path shared by `StoreData` and truncating `SetAttr`.
//!
//! A content change writes a new data file `data/<vnode>.<new dv>` (a copy of
//! the old one with the change applied), fsyncs it and the folder, commits the
//! record pointing at it, and only then deletes the old file. A crash leaves
//! either version committed; the other is removed as an orphan at start.

use super::namespace::apply_attr;
use super::txn::{Reader, VnodeAccess};
use super::{Change, Volume, brk, sync_dir};
use crate::error::{FsResult, rpc_err};
use cellfs_protocol::message::InlineFile;
use cellfs_protocol::pieces::{PieceSource, gather, write_pieces};
use cellfs_protocol::{ErrorCode, Fid, FileKind, SetAttr, Status, Timestamp, writeback};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest file size the server keeps.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Size of the chunks moved between the network and data files.
pub const CHUNK: usize = 1024 * 1024;

/// What a content change will do, before any byte is written.
#[derive(Debug, Clone, Copy)]
pub struct StorePlan {
    /// Target file.
    pub fid: Fid,
    /// Where the written bytes go.
    pub offset: u64,
    /// How many bytes are written.
    pub len: u64,
    /// Size set before the write, if any.
    pub truncate: Option<u64>,
    /// The data version the file must still have, if any (refused with
    /// `Changed` otherwise).
    pub expect: Option<u64>,
}

/// A new data file being prepared; deleted on drop unless committed.
#[derive(Debug)]
pub struct PendingStore {
    fid: Fid,
    file: Option<Arc<File>>,
    new_path: PathBuf,
    /// The record's `data_file` once committed (the suffix of `new_path`).
    data_file: u64,
    /// Whether the new file and its name need no fsync at commit (written
    /// ahead, outside the volume's lock: fsynced there, or logged).
    synced: bool,
    /// The whole new content, logged in the commit instead of fsyncing the
    /// file (see `volume/settle.rs`).
    logged: Option<Vec<u8>>,
    old_path: Option<PathBuf>,
    old_size: u64,
    old_dv: u64,
    new_size: u64,
    committed: bool,
}

impl Drop for PendingStore {
    fn drop(&mut self) {
        if !self.committed && self.file.is_some() {
            let _ = std::fs::remove_file(&self.new_path);
        }
    }
}

/// A file's whole new content written (and fsynced, or to be logged) ahead
/// of its store, outside the volume's lock ([`Volume::write_ahead`],
/// [`Volume::start_ahead`]), so that concurrent writers do their writes and
/// fsyncs at once, and a large store blocks no other change while its bytes
/// arrive; [`Volume::adopt`]
/// checks it against the file and the quota under the lock. Deleted on drop
/// unless committed.
#[derive(Debug)]
pub struct WrittenAhead(PendingStore);

impl WrittenAhead {
    /// Copies the whole new content, exactly its length in bytes, from
    /// `src` into the file (as [`PendingStore::receive`]).
    pub async fn receive<S: PieceSource + Send>(&mut self, src: &mut S) -> FsResult<()> {
        let len = self.0.new_size;
        self.0.receive(src, 0, len).await
    }
}

/// What a content change replaces and leaves, checked against the file and
/// the quota.
struct Checked {
    rec: crate::schema::VnodeRecord,
    base: u64,
    new_size: u64,
}

impl PendingStore {
    /// Writes `bytes` into the new file at `offset` (a store small enough to
    /// arrive whole before it is prepared).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> FsResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| rpc_err(ErrorCode::Io, "no data file for a non-empty write"))?;
        file.write_all_at(bytes, offset)?;
        Ok(())
    }

    /// Copies exactly `len` bytes from `src` into the new file at `offset`:
    /// a whole chunk of the stream's own pieces at a time, written with one
    /// `writev` (no zeroed buffer to copy them into).
    pub async fn receive<S: PieceSource + Send>(&mut self, src: &mut S, offset: u64, len: u64) -> FsResult<()> {
        if len == 0 {
            return Ok(());
        }
        let file = self
            .file
            .clone()
            .ok_or_else(|| rpc_err(ErrorCode::Io, "no data file for a non-empty write"))?;
        // Chunks are written one after another from here on.
        (&*file).seek(SeekFrom::Start(offset))?;
        let mut done = 0u64;
        let chunk_len = CHUNK.min(usize::try_from(len).unwrap_or(CHUNK));
        let drop_behind = len >= writeback::DROP_BEHIND_FROM;
        // The previous chunk's write runs while the next chunk arrives.
        let mut writing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
        while done < len {
            // Gather a whole chunk before handing it to a blocking write: the
            // stream yields packet-sized pieces.
            let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(chunk_len);
            let mut chunk = Vec::new();
            if !gather(src, want, &mut chunk).await? {
                return Err(rpc_err(
                    ErrorCode::BadRequest,
                    format!("data ended before {} of {len} bytes", done + want as u64),
                ));
            }
            if let Some(previous) = writing.take() {
                previous.await??;
            }
            let f = file.clone();
            let at = offset + done;
            writing = Some(tokio::task::spawn_blocking(move || {
                write_pieces(&mut &*f, &chunk)?;
                writeback::wrote(&f, at, want, drop_behind)
            }));
            done += want as u64;
        }
        if let Some(last) = writing {
            last.await??;
        }
        Ok(())
    }
}

/// Threads reading the files of one `FetchFiles` at once.
const INLINE_READERS: usize = 4;

/// The bytes of one file picked for a `FetchFiles` reply (`None` when it is
/// too large for it), or the error opening it gave.
fn read_inline(opened: FsResult<(Status, Option<File>)>) -> FsResult<InlineFile> {
    let (status, file) = opened?;
    let data = match file {
        None if status.size == 0 => Some(Vec::new()),
        None => None,
        Some(f) => {
            let mut buf = vec![0u8; usize::try_from(status.size).unwrap_or(usize::MAX)];
            f.read_exact_at(&mut buf, 0)?;
            Some(buf)
        }
    };
    Ok(InlineFile { status, data })
}

impl Volume {
    /// Opens a file for reading: its status and, if it is not empty, its data file.
    pub fn open_data(&self, fid: Fid) -> FsResult<(Status, Option<File>)> {
        self.open_data_in(&self.reader()?, fid)
    }

    /// Status and whole content of each of `fids` in one read transaction;
    /// a file's bytes are left out when larger than `max_file` or past the
    /// `max_total` bytes already included.
    pub fn inline_files(&self, fids: &[Fid], max_file: u64, max_total: u64) -> FsResult<Vec<FsResult<InlineFile>>> {
        let r = self.reader()?;
        let mut budget = max_total;
        // Which files come with their bytes is decided first (sizes are in
        // the records); the reads then run a few at a time, since a cold
        // disk answers several small reads in about the time of one.
        let opened: Vec<FsResult<(Status, Option<File>)>> = fids
            .iter()
            .map(|&fid| {
                let (status, file) = self.open_data_in(&r, fid)?;
                let file = match file {
                    Some(f) if status.size <= max_file && status.size <= budget => {
                        budget -= status.size;
                        Some(f)
                    }
                    _ => None,
                };
                Ok((status, file))
            })
            .collect();
        if opened.len() == 1 {
            // One file (a node refreshing the copy it had): no threads.
            return Ok(opened.into_iter().map(read_inline).collect());
        }
        let per_thread = opened.len().div_ceil(INLINE_READERS).max(1);
        let mut parts: Vec<Vec<_>> = (0..INLINE_READERS).map(|_| Vec::new()).collect();
        for (i, o) in opened.into_iter().enumerate() {
            parts[i / per_thread].push(o);
        }
        let mut out: Vec<FsResult<InlineFile>> = Vec::with_capacity(fids.len());
        std::thread::scope(|scope| {
            let workers: Vec<_> = parts
                .into_iter()
                .filter(|part| !part.is_empty())
                .map(|part| scope.spawn(move || part.into_iter().map(read_inline).collect::<Vec<_>>()))
                .collect();
            for w in workers {
                out.extend(w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
        });
        Ok(out)
    }

    fn open_data_in(&self, r: &Reader, fid: Fid) -> FsResult<(Status, Option<File>)> {
        let rec = r.vnode(fid)?;
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(rpc_err(ErrorCode::IsDir, format!("{fid} is a directory"))),
            FileKind::Symlink | FileKind::MountPoint | FileKind::Special(_) => {
                return Err(rpc_err(ErrorCode::Invalid, format!("{fid} is not a file")));
            }
        }
        let status = r.status(fid.vnode, &rec);
        if rec.size == 0 {
            return Ok((status, None));
        }
        let file = self.open_data_file(fid.vnode, rec.data_file)?;
        Ok((status, Some(file)))
    }

    /// Whether a content change would be taken now (the file exists, is a
    /// file, and the quota holds it): checked again when it commits.
    pub fn precheck_store(&self, plan: StorePlan) -> FsResult<()> {
        self.check_store(plan).map(|_| ())
    }

    fn check_store(&self, plan: StorePlan) -> FsResult<Checked> {
        self.check_writable()?;
        let r = self.reader()?;
        let rec = r.vnode(plan.fid)?;
        if let Some(expect) = plan.expect
            && rec.data_version != expect
        {
            return Err(rpc_err(
                ErrorCode::Changed,
                format!("{} is at data version {}, not {expect}", plan.fid, rec.data_version),
            ));
        }
        match rec.kind {
            FileKind::File => {}
            FileKind::Dir => return Err(rpc_err(ErrorCode::IsDir, format!("{} is a directory", plan.fid))),
            FileKind::Symlink | FileKind::MountPoint | FileKind::Special(_) => {
                return Err(rpc_err(ErrorCode::Invalid, format!("{} is not a file", plan.fid)));
            }
        }
        let base = plan.truncate.unwrap_or(rec.size);
        let end = plan
            .offset
            .checked_add(plan.len)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or_else(|| rpc_err(ErrorCode::TooLarge, "write beyond the largest file size"))?;
        if base > MAX_FILE_SIZE {
            return Err(rpc_err(ErrorCode::TooLarge, "size beyond the largest file size"));
        }
        let new_size = if plan.len > 0 { base.max(end) } else { base };
        let quota = self.quota();
        let used = r.state()?.used;
        let grown = used.saturating_add(new_size.saturating_sub(rec.size));
        if quota > 0 && new_size > rec.size && grown > quota {
            return Err(rpc_err(
                ErrorCode::QuotaExceeded,
                format!("volume {} would use {grown} bytes, quota is {quota}", self.id),
            ));
        }
        Ok(Checked { rec, base, new_size })
    }

    /// A pending store of `fid` replacing `checked.rec`, its new data file
    /// (`data_file`) not made yet.
    fn pending(&self, fid: Fid, checked: &Checked, data_file: u64) -> PendingStore {
        let rec = &checked.rec;
        PendingStore {
            fid,
            file: None,
            new_path: self.data_path(fid.vnode, data_file),
            data_file,
            synced: false,
            logged: None,
            old_path: (rec.size > 0).then(|| self.data_path(fid.vnode, rec.data_file)),
            old_size: rec.size,
            old_dv: rec.data_version,
            new_size: checked.new_size,
            committed: false,
        }
    }

    /// Checks a content change against the file and the quota, then prepares
    /// the new data file (old content copied, truncate applied). Nothing is
    /// visible until [`Volume::commit_store`].
    pub fn prepare_store(&self, plan: StorePlan) -> FsResult<PendingStore> {
        let checked = self.check_store(plan)?;
        let mut pending = self.pending(plan.fid, &checked, checked.rec.data_version + 1);
        let base = checked.base;
        if checked.new_size == 0 {
            return Ok(pending);
        }
        // Old bytes the write leaves in place are copied; a write of the
        // whole new length from 0 leaves none.
        let covered = plan.offset == 0 && plan.len >= base;
        let copy_old = base > 0 && !covered && pending.old_path.is_some();
        if let (true, Some(old)) = (copy_old, &pending.old_path) {
            // copy_file_range under the hood: cheap on reflink-capable filesystems.
            let copied = std::fs::copy(old, &pending.new_path);
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&pending.new_path);
                return Err(e.into());
            }
        }
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!copy_old)
            .open(&pending.new_path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&pending.new_path);
                return Err(e.into());
            }
        };
        pending.file = Some(Arc::new(file));
        if let Some(f) = &pending.file {
            f.set_len(base)?;
        }
        Ok(pending)
    }

    /// Writes `bytes` as the whole new content of `fid` into a new data file,
    /// without the volume's lock and without looking at the file's record
    /// (checked later by [`Volume::adopt`]). Up to [`super::LOGGED_MAX`]
    /// bytes are logged with the commit; a larger file and the data folder
    /// are fsynced here.
    pub fn write_ahead(&self, fid: Fid, bytes: &[u8]) -> FsResult<WrittenAhead> {
        let mut ahead = self.start_ahead(fid, bytes.len() as u64)?;
        if let Some(f) = &ahead.0.file {
            f.write_all_at(bytes, 0)?;
        }
        if bytes.len() <= super::LOGGED_MAX {
            ahead.0.logged = Some(bytes.to_vec());
            Ok(ahead)
        } else {
            self.finish_ahead(ahead)
        }
    }

    /// A new, empty data file for `len` bytes of new content of `fid`, to
    /// be written ahead of its store ([`WrittenAhead::receive`], then
    /// [`Volume::finish_ahead`]). Its name ends in a random number above
    /// every data version, created with `O_EXCL` and named by no clone, so
    /// it is like no other.
    pub fn start_ahead(&self, fid: Fid, len: u64) -> FsResult<WrittenAhead> {
        self.check_writable()?;
        let data_file = loop {
            let n = (1 << 63) | (super::new_incarnation()? >> 1);
            if !self.clones_name(fid.vnode, n) {
                break n;
            }
        };
        let new_path = self.data_path(fid.vnode, data_file);
        let file = self.spares()?.create_new(&new_path)?;
        Ok(WrittenAhead(PendingStore {
            fid,
            file: Some(Arc::new(file)),
            new_path,
            data_file,
            synced: true,
            logged: None,
            old_path: None,
            old_size: 0,
            old_dv: 0,
            new_size: len,
            committed: false,
        }))
    }

    /// Makes a file written ahead durable, with its name (blocking).
    pub fn finish_ahead(&self, ahead: WrittenAhead) -> FsResult<WrittenAhead> {
        if let Some(f) = &ahead.0.file {
            f.sync_all()?;
            sync_dir(&self.dir.join("data"))?;
        }
        Ok(ahead)
    }

    /// Takes a file written ahead as the store of its whole content, checked
    /// against the file, the quota and `expect` as [`Volume::prepare_store`]
    /// checks.
    pub fn adopt(&self, ahead: WrittenAhead, expect: Option<u64>) -> FsResult<PendingStore> {
        let WrittenAhead(mut written) = ahead;
        let len = written.new_size;
        let checked = self.check_store(StorePlan {
            fid: written.fid,
            offset: 0,
            len,
            truncate: Some(len),
            expect,
        })?;
        let mut pending = self.pending(written.fid, &checked, written.data_file);
        pending.file = written.file.take();
        pending.synced = true;
        pending.logged = written.logged.take();
        Ok(pending)
    }

    /// Makes a prepared content change durable and visible: fsync the new file
    /// and the folder (or log its bytes in the commit), commit the record,
    /// delete the old file.
    pub fn commit_store(
        &self,
        mut pending: PendingStore,
        mtime: Option<Timestamp>,
        attr: Option<&SetAttr>,
    ) -> FsResult<Change<Status>> {
        if let Some(f) = pending.file.as_ref().filter(|_| !pending.synced)
            && !super::group::defer_sync(f)
        {
            f.sync_all()?;
            sync_dir(&self.dir.join("data"))?;
        }
        let fid = pending.fid;
        let change = self.write(|t| {
            let mut rec = t.vnode(fid)?;
            if rec.data_version != pending.old_dv {
                return Err(rpc_err(ErrorCode::Io, format!("{fid} changed during a store")));
            }
            t.state.used = t
                .state
                .used
                .saturating_sub(pending.old_size)
                .saturating_add(pending.new_size);
            rec.size = pending.new_size;
            rec.data_version += 1;
            rec.data_file = pending.data_file;
            rec.mtime = mtime.unwrap_or(t.now);
            rec.ctime = t.now;
            if let Some(attr) = attr {
                apply_attr(t, &mut rec, attr);
            }
            t.put(fid.vnode, &rec)?;
            if let Some(bytes) = &pending.logged {
                t.log_data(fid.vnode, pending.data_file, bytes)?;
            }
            Ok((t.status(fid.vnode, &rec), vec![brk(fid, Vec::new(), false)]))
        })?;
        pending.committed = true;
        if pending.logged.is_some() {
            self.note_logged(fid.vnode, pending.data_file);
        }
        if pending.old_path.as_ref() != Some(&pending.new_path) {
            self.collect_garbage(pending.old_path.take());
        }
        Ok(change)
    }

    /// `SetAttr`: a size change goes through the copy-on-write path, the rest
    /// is a metadata change.
    pub fn set_attr_full(&self, fid: Fid, attr: &SetAttr) -> FsResult<Change<Status>> {
        match attr.size {
            None => self.set_attr(fid, attr),
            Some(size) => {
                let pending = self.prepare_store(StorePlan {
                    fid,
                    offset: 0,
                    len: 0,
                    truncate: Some(size),
                    expect: None,
                })?;
                self.commit_store(pending, attr.mtime, Some(attr))
            }
        }
    }
}
