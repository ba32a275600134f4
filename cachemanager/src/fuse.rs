//! The only module that touches fuser: translates kernel requests into core
//! calls and core results into replies.

use crate::caller;
use crate::core::{Core, DirItem, Entry, KernelCache, LockRequest, Lookup, Opened};
use crate::error::FsError;
use crate::passthrough::{Backings, Mode, PASSTHROUGH_MIN_SIZE};
use crate::range_locks::Kind;
use crate::readers::{Readers, Turn};
use cellfs_protocol::{FileKind, SetAttr, Special, Timestamp};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Read buffers the FUSE threads share and reuse: a fresh 1 MiB buffer per
/// READ is a new mapping (at the allocator's mmap threshold), faulted in
/// and zeroed page by page, then unmapped. At most [`KEPT_READ_BUFFERS`]
/// stay between READs, however many threads serve them (one per thread
/// kept 16 MiB with 16 threads).
static READ_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Read buffers kept for reuse.
const KEPT_READ_BUFFERS: usize = 4;

/// Runs `f` with a read buffer from the shared ones (or a new one).
fn with_read_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let buffers = || READ_BUFFERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut buf = buffers().pop().unwrap_or_default();
    let out = f(&mut buf);
    let mut kept = buffers();
    if kept.len() < KEPT_READ_BUFFERS {
        kept.push(buf);
    }
    out
}

/// One kernel request being served: its span closes (and is logged)
/// before the thread's turn ends, which may park the thread.
struct Serving {
    _span: tracing::span::EnteredSpan,
    _turn: Turn,
}

/// The fuser filesystem over a [`Core`]; clones share it (a request
/// deferred to another thread takes one).
#[derive(Clone)]
pub struct CellFs {
    core: Arc<Core>,
    /// The kernel accepted ENOSYS for opendir (no directory open messages).
    no_opendir: Arc<AtomicBool>,
    /// Whether to ask for passthrough at init.
    passthrough: bool,
    /// Passthrough backing files.
    backings: Arc<Backings>,
    /// Which of the session's threads read the next request.
    readers: Arc<Readers>,
}

impl CellFs {
    /// Wraps a core for a session of `threads` threads; `passthrough` asks
    /// the kernel for FUSE passthrough.
    pub fn new(core: Arc<Core>, passthrough: bool, threads: usize) -> Self {
        CellFs {
            core,
            passthrough,
            no_opendir: Arc::new(AtomicBool::new(false)),
            backings: Arc::default(),
            readers: Readers::new(threads),
        }
    }
}

impl CellFs {
    /// Which of the session's threads read (see [`Readers::watch_device`]).
    pub fn readers(&self) -> Arc<Readers> {
        self.readers.clone()
    }

    /// Starts serving one kernel request on this thread: its span
    /// (`RUST_LOG=cellfs_cachemanager::fuse=debug` logs each with its time
    /// when it closes) and this thread's turn among the readers.
    fn serve(&self, req: &Request, op: &'static str, ino: u64) -> Serving {
        Serving {
            _span: span(req, op, ino).entered(),
            _turn: self.readers.turn(),
        }
    }

    /// [`CellFs::serve`] for a request the fileserver authorizes, with the
    /// request's caller entered on this thread.
    fn serve_as(&self, req: &Request, op: &'static str, ino: u64) -> (Serving, caller::Scope) {
        let serving = self.serve(req, op, ino);
        (serving, caller::enter(Some(caller::of(req.uid(), req.gid()))))
    }

    /// Serves request `op` on `ino`, which may wait on the fileserver (a
    /// change, or a store at close), with `serve`: on this thread while
    /// enough of the session's threads are free, else on the runtime's
    /// blocking pool, and this thread goes back to the kernel. Requests the
    /// node answers alone (cached opens and reads) so never queue behind
    /// waits, however many writers wait (a restarted server's grace holds
    /// every change for seconds; a stopped one, for the request timeout).
    /// `as_caller`: the request acts for its caller (the server checks its
    /// rights).
    fn changing(
        &self,
        req: &Request,
        op: &'static str,
        ino: u64,
        as_caller: bool,
        serve: impl FnOnce(&CellFs) + Send + 'static,
    ) {
        let span = span(req, op, ino);
        let turn = self.readers.turn();
        let caller = as_caller.then(|| caller::of(req.uid(), req.gid()));
        if !self.readers.few_free() {
            let _serving = Serving {
                _span: span.entered(),
                _turn: turn,
            };
            let _as = caller.map(|c| caller::enter(Some(c)));
            return serve(self);
        }
        span.record("deferred", true);
        let fs = self.clone();
        self.core.runtime().spawn_blocking(move || {
            let _span = span.entered();
            let _as = caller.map(|c| caller::enter(Some(c)));
            serve(&fs);
        });
    }

    /// For a handle opened with `O_APPEND` (`append`), direct I/O: its
    /// writes go through us, which append at the end of the copy as
    /// refreshed from the server (a log other nodes append to), and the
    /// kernel keeps no pages of them (it would keep them at the end it
    /// knew). Such a handle gets no passthrough either.
    fn appending(&self, fh: u64, append: bool) -> FopenFlags {
        if !append {
            return FopenFlags::empty();
        }
        self.core.set_append(fh);
        FopenFlags::FOPEN_DIRECT_IO
    }

    /// Replies with the entry `r` made for `name` in `parent`, counting it
    /// for the kernel's forget.
    fn reply_entry(&self, reply: ReplyEntry, parent: INodeNo, name: &str, r: Result<Entry, FsError>) {
        match r {
            Ok(e) => {
                self.core.note_entries([(e.ino, parent.0, name)]);
                reply.entry(&e.ttl, &attr(&e), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// O_TRUNC on the handle `opened` was just made for
    /// ([`Core::truncate_opened`]); on failure the handle is released and
    /// the errno for the kernel returned.
    fn truncate_opened(&self, ino: u64, opened: &mut Opened) -> Result<(), Errno> {
        if let Err(e) = self.core.truncate_opened(ino, opened.fh) {
            let _ = self.core.release(opened.fh);
            return Err(errno(e));
        }
        opened.size = 0;
        Ok(())
    }

    /// The passthrough backing for the just opened `opened` of inode `ino`
    /// (`None`: ordinary cached I/O), or the error to answer the open with.
    fn backing(
        &self,
        ino: u64,
        opened: &Opened,
        want: bool,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, Errno> {
        let file = || opened.file.clone().or_else(|| self.core.handle_file(opened.fh).ok());
        match self.backings.open(ino, opened.fh, file, want, register) {
            Mode::Passthrough(b) => {
                self.core.set_passthrough(opened.fh);
                Ok(Some(b))
            }
            Mode::Cached => Ok(None),
            Mode::Stale => {
                tracing::warn!(ino, "an older copy of this file is still the kernel's backing file");
                let _ = self.core.release(opened.fh);
                Err(Errno::EBUSY)
            }
        }
    }
}

/// Kernel cache invalidation through fuser's notifier.
pub struct NotifierCache(pub Notifier);

impl KernelCache for NotifierCache {
    fn inval_inode(&self, ino: u64) {
        if let Err(e) = self.0.inval_inode(INodeNo(ino), 0, 0) {
            tracing::debug!(ino, error = %e, "inval_inode");
        }
    }

    fn inval_entry(&self, parent: u64, name: &str) {
        if let Err(e) = self.0.inval_entry(INodeNo(parent), OsStr::new(name)) {
            tracing::debug!(parent, name, error = %e, "inval_entry");
        }
    }

    fn delete(&self, parent: u64, child: u64, name: &str) {
        // The kernel drops the name whatever it holds under it (ENOENT: no
        // such name, or another file's).
        if let Err(e) = self.0.delete(INodeNo(parent), INodeNo(child), OsStr::new(name)) {
            tracing::debug!(parent, child, name, error = %e, "notify delete");
        }
    }

    fn store(&self, ino: u64, data: &[u8]) -> bool {
        match self.0.store(INodeNo(ino), 0, data) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(ino, error = %e, "notify store");
                false
            }
        }
    }
}

/// Rows of readdirplus attributes gathered per reply (more than a reply
/// buffer holds).
const READDIR_BATCH: usize = 256;

/// One readdir row: inode, kind, name.
struct Row<'a> {
    ino: u64,
    kind: FileKind,
    name: &'a str,
}

/// Readdir rows from `offset` on, each with the offset of the next:
/// 1 = ".", 2 = "..", 3.. = entries.
fn rows(dir: u64, items: &[DirItem], offset: u64) -> impl Iterator<Item = (u64, Row<'_>)> {
    let dots = [(1, "."), (2, "..")].into_iter().map(move |(off, name)| {
        (
            off,
            Row {
                ino: dir,
                kind: FileKind::Dir,
                name,
            },
        )
    });
    let entries = items.iter().enumerate().map(|(i, item)| {
        (
            i as u64 + 3,
            Row {
                ino: item.ino,
                kind: item.kind,
                name: &item.name,
            },
        )
    });
    dots.chain(entries).skip(offset as usize)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir | FileKind::MountPoint => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Special(Special::Fifo) => FileType::NamedPipe,
        FileKind::Special(Special::Socket) => FileType::Socket,
        FileKind::Special(Special::CharDevice(_)) => FileType::CharDevice,
        FileKind::Special(Special::BlockDevice(_)) => FileType::BlockDevice,
    }
}

fn attr(e: &Entry) -> FileAttr {
    let s = &e.status;
    FileAttr {
        ino: INodeNo(e.ino),
        size: s.size,
        blocks: s.size.div_ceil(512),
        atime: s.atime.to_system_time(),
        mtime: s.mtime.to_system_time(),
        ctime: s.ctime.to_system_time(),
        crtime: s.ctime.to_system_time(),
        kind: file_type(s.kind),
        perm: (s.mode & 0o7777) as u16,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        // The kernel's 32-bit encoding, as `mknod` sent it.
        rdev: match s.kind {
            FileKind::Special(sp) => sp.rdev() as u32,
            _ => 0,
        },
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: FsError) -> Errno {
    if e.errno == libc::EIO {
        tracing::warn!(error = %e.message, "I/O error");
    } else {
        tracing::debug!(error = %e.message, errno = e.errno, "request failed");
    }
    Errno::from_i32(e.errno)
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::EINVAL)?;
    cellfs_protocol::names::validate_name(s).map_err(|e| Errno::from_i32(e.code.errno()))?;
    Ok(s)
}

/// The span of kernel request `op` on `ino` (logged with its time when it
/// closes, under `RUST_LOG=cellfs_cachemanager::fuse=debug`); `deferred`
/// is set when it is served off the FUSE threads ([`CellFs::changing`]).
fn span(req: &Request, op: &'static str, ino: u64) -> tracing::Span {
    tracing::debug_span!(
        "fuse",
        op,
        ino,
        unique = req.unique().0,
        pid = req.pid(),
        deferred = tracing::field::Empty
    )
}

/// [`name_str`] owned, for a request served on another thread.
fn owned_name(name: &OsStr) -> Result<String, Errno> {
    name_str(name).map(str::to_owned)
}

fn time(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => Timestamp::from(t),
        TimeOrNow::Now => Timestamp::from(SystemTime::now()),
    }
}

/// A kernel lock request in the core's terms.
#[allow(clippy::too_many_arguments)]
fn lock_request(
    req: &Request,
    ino: INodeNo,
    fh: FileHandle,
    owner: LockOwner,
    start: u64,
    end: u64,
    typ: i32,
    pid: u32,
) -> Result<LockRequest, Errno> {
    let kind = match typ {
        libc::F_RDLCK => Some(Kind::Read),
        libc::F_WRLCK => Some(Kind::Write),
        libc::F_UNLCK => None,
        _ => return Err(Errno::EINVAL),
    };
    Ok(LockRequest {
        ino: ino.0,
        fh: fh.0,
        owner: owner.0,
        pid,
        start,
        end,
        kind,
        waiter: req.pid(),
    })
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for CellFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Each is an optimisation the kernel may refuse; cellfs works without.
        for (flag, what) in [
            (InitFlags::FUSE_DO_READDIRPLUS, "readdirplus"),
            (InitFlags::FUSE_PARALLEL_DIROPS, "parallel directory operations"),
            // O_TRUNC comes with the open, on the handle: a writer's
            // truncation is stored with its writes at close.
            (InitFlags::FUSE_ATOMIC_O_TRUNC, "atomic O_TRUNC"),
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::info!("the kernel does not offer {what}");
            }
        }
        // Locks come to us so the server can check `k` and keep other
        // nodes out; without these the kernel would lock on this node only.
        for (flag, what) in [
            (InitFlags::FUSE_POSIX_LOCKS, "POSIX locks"),
            (InitFlags::FUSE_FLOCK_LOCKS, "flock locks"),
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::warn!("the kernel does not pass {what} to the filesystem: they hold on this node only");
            }
        }
        let no_opendir = config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT).is_ok();
        if self.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                Ok(()) => {
                    // The backing files are on an ordinary local filesystem.
                    let _ = config.set_max_stack_depth(1);
                    self.backings.enable();
                    tracing::info!("FUSE passthrough on: the kernel reads cached files directly");
                }
                Err(_) => {
                    tracing::info!("the kernel does not offer FUSE passthrough; reads go through the cache manager")
                }
            }
        }
        self.no_opendir.store(no_opendir, Ordering::Relaxed);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _as = self.serve_as(req, "lookup", parent.0);
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.lookup(parent.0, name) {
            Ok(Lookup::Found(e)) => self.reply_entry(reply, parent, name, Ok(e)),
            Ok(Lookup::Missing(ttl)) if !ttl.is_zero() => {
                // A negative entry: inode 0 with a TTL caches the miss.
                let neg = FileAttr {
                    ino: INodeNo(0),
                    size: 0,
                    blocks: 0,
                    atime: SystemTime::UNIX_EPOCH,
                    mtime: SystemTime::UNIX_EPOCH,
                    ctime: SystemTime::UNIX_EPOCH,
                    crtime: SystemTime::UNIX_EPOCH,
                    kind: FileType::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 4096,
                    flags: 0,
                };
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &neg, Generation(0))
            }
            Ok(Lookup::Missing(_)) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        let _span = self.serve(req, "forget", ino.0);
        self.core.forget([(ino.0, nlookup)]);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = self.serve(req, "getattr", ino.0);
        match self.core.getattr(ino.0) {
            Ok(e) => reply.attr(&e.ttl, &attr(&e)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        self.changing(req, "setattr", ino.0, true, move |fs| {
            match fs.core.setattr(ino.0, set, fh.map(|h| h.0)) {
                Ok(e) => reply.attr(&e.ttl, &attr(&e)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _as = self.serve_as(req, "readlink", ino.0);
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match owned_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.changing(req, "mkdir", parent.0, true, move |fs| {
            let made = fs.core.mkdir(parent.0, &name, mode & !umask & 0o7777, uid, gid);
            fs.reply_entry(reply, parent, &name, made)
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let name = match owned_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.changing(req, "mknod", parent.0, true, move |fs| {
            let perm = mode & !umask & 0o7777;
            if mode & libc::S_IFMT == libc::S_IFREG {
                // A regular file: created as open(O_CREAT|O_EXCL) would, then closed.
                let made = fs.core.create(parent.0, &name, perm, uid, gid, true);
                let made = made.and_then(|(e, opened)| fs.core.release(opened.fh).map(|()| e));
                return fs.reply_entry(reply, parent, &name, made);
            }
            match Special::from_mode(mode, u64::from(rdev)) {
                Some(special) => {
                    let made = fs.core.make_special(parent.0, &name, special, perm, uid, gid);
                    fs.reply_entry(reply, parent, &name, made)
                }
                None => reply.error(Errno::EINVAL),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match owned_name(name) {
            Ok(n) => self.changing(req, "unlink", parent.0, true, move |fs| {
                reply_empty(reply, fs.core.remove(parent.0, &n, false))
            }),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match owned_name(name) {
            Ok(n) => self.changing(req, "rmdir", parent.0, true, move |fs| {
                reply_empty(reply, fs.core.remove(parent.0, &n, true))
            }),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let name = match owned_name(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(target) = target.to_str().map(str::to_owned) else {
            return reply.error(Errno::EINVAL);
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.changing(req, "symlink", parent.0, true, move |fs| {
            let made = fs.core.symlink(parent.0, &name, &target, uid, gid);
            fs.reply_entry(reply, parent, &name, made)
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (owned_name(name), owned_name(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.changing(req, "rename", parent.0, true, move |fs| {
            reply_empty(reply, fs.core.rename(parent.0, &name, newparent.0, &newname, noreplace))
        });
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match owned_name(newname) {
            Ok(n) => self.changing(req, "link", ino.0, true, move |fs| {
                let made = fs.core.link(ino.0, newparent.0, &n);
                fs.reply_entry(reply, newparent, &n, made)
            }),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _as = self.serve_as(req, "open", ino.0);
        let write = !matches!(flags.acc_mode(), fuser::OpenAccMode::O_RDONLY);
        let mut opened = match self.core.open(ino.0, write) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(e)),
        };
        // Atomic O_TRUNC: the kernel truncates its view once we answer (a
        // read-only open with O_TRUNC truncates too, on the server).
        if flags.0 & libc::O_TRUNC != 0
            && let Err(e) = self.truncate_opened(ino.0, &mut opened)
        {
            return reply.error(e);
        }
        let mut fopen = FopenFlags::empty();
        if !write {
            // Nothing to store when a read-only handle closes.
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        let fh = FileHandle(opened.fh);
        if opened.streaming {
            // A copy still arriving is read through us, which wait for its
            // bytes; direct I/O keeps the inode out of the kernel's caching
            // mode, so the next open can pass through to the whole copy.
            return reply.opened(fh, fopen | FopenFlags::FOPEN_DIRECT_IO);
        }
        let append = write && flags.0 & libc::O_APPEND != 0;
        fopen |= self.appending(opened.fh, append);
        let want = opened.size >= PASSTHROUGH_MIN_SIZE && !append;
        match self.backing(ino.0, &opened, want, |f| reply.open_backing(f)) {
            Ok(Some(b)) => reply.opened_passthrough(fh, fopen, &b),
            Ok(None) if opened.keep_cache => reply.opened(fh, fopen | FopenFlags::FOPEN_KEEP_CACHE),
            Ok(None) => reply.opened(fh, fopen),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = self.serve(req, "read", ino.0);
        with_read_buffer(|buf| match self.core.read(fh.0, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _span = self.serve(req, "write", ino.0);
        match self.core.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.changing(req, "flush", ino.0, false, move |fs| {
            fs.core.unlock_owner(ino.0, lock_owner.0);
            reply_empty(reply, fs.core.flush(fh.0));
        });
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _span = self.serve(req, "release", ino.0);
        self.core.unlock_handle(ino.0, fh.0, lock_owner.map(|o| o.0));
        self.backings.release(fh.0);
        reply_empty(reply, self.core.release(fh.0));
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.changing(req, "fsync", ino.0, false, move |fs| {
            reply_empty(reply, fs.core.flush(fh.0))
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _span = self.serve(req, "opendir", ino.0);
        if self.no_opendir.load(Ordering::Relaxed) {
            // The kernel stops sending opendir/releasedir and keeps each
            // directory's cached entries until an invalidation (breaks).
            return reply.error(Errno::ENOSYS);
        }
        // Readdir reads by inode; there is no per-handle state.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR)
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _as = self.serve_as(req, "readdir", ino.0);
        let items = match self.core.dir_items(ino.0) {
            Ok(i) => i,
            Err(e) => return reply.error(errno(e)),
        };
        for (off, row) in rows(ino.0, &items, offset) {
            if reply.add(INodeNo(row.ino), off, file_type(row.kind), row.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let _as = self.serve_as(req, "readdirplus", ino.0);
        let items = match self.core.dir_items(ino.0) {
            Ok(i) => i,
            Err(e) => return reply.error(errno(e)),
        };
        let dir = match self.core.getattr(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(errno(e)),
        };
        // Attributes for at most one reply buffer's worth of rows.
        let start = offset.saturating_sub(2) as usize;
        let page = &items[start.min(items.len())..(start + READDIR_BATCH).min(items.len())];
        let entries = self.core.entries_of(page);
        // The rows the kernel links (all but `.` and `..`) count for its forget.
        let mut linked = Vec::with_capacity(page.len());
        for (off, row) in rows(ino.0, &items, offset) {
            let i = off as usize - 3;
            let full = if row.name == "." || row.name == ".." {
                // The kernel does not link these; any attributes do.
                reply.add(
                    INodeNo(row.ino),
                    off,
                    row.name,
                    &Duration::ZERO,
                    &attr(&dir),
                    Generation(0),
                )
            } else {
                match entries.get(i - start) {
                    // Past this batch: the kernel asks again from here.
                    None => break,
                    // The node went away meanwhile: leave the row out.
                    Some(None) => continue,
                    Some(Some(e)) => {
                        // A mount point's entry expires at once so the next
                        // access looks it up and crosses into the volume root.
                        let ttl = if e.status.kind == FileKind::MountPoint {
                            Duration::ZERO
                        } else {
                            e.ttl
                        };
                        let full = reply.add(INodeNo(row.ino), off, row.name, &ttl, &attr(e), Generation(0));
                        if !full {
                            linked.push((e.ino, ino.0, row.name));
                        }
                        full
                    }
                }
            };
            if full {
                break;
            }
        }
        self.core.note_entries(linked);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _span = self.serve(req, "fsyncdir", ino.0);
        // Directory changes are committed on the server before they return.
        reply.ok();
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        let _span = self.serve(req, "getxattr", ino.0);
        // No extended attributes: ENOSYS once and the kernel stops asking
        // (it asks for security.capability before the first write).
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        let _span = self.serve(req, "listxattr", ino.0);
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _span = self.serve(req, "setxattr", ino.0);
        // As getxattr: the kernel then answers EOPNOTSUPP itself, which
        // `cp -a` and `rsync -X` take quietly (fuser's default logged a
        // warning for it).
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        let _span = self.serve(req, "removexattr", ino.0);
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _span = self.serve(req, "ioctl", ino.0);
        // No ioctls: what isatty() and friends expect of a plain file, quietly.
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _span = self.serve(req, "statfs", ino.0);
        const BSIZE: u64 = 4096;
        match self.core.statfs(ino.0) {
            Ok(v) => {
                let (total, free) = v.space();
                let blocks = total.div_ceil(BSIZE);
                let free = free / BSIZE;
                reply.statfs(
                    blocks,
                    free,
                    free,
                    v.files + 1_000_000,
                    1_000_000,
                    BSIZE as u32,
                    255,
                    BSIZE as u32,
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let _as = self.serve_as(req, "getlk", ino.0);
        let r = match lock_request(req, ino, fh, lock_owner, start, end, typ, pid) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        match self.core.getlk(&r) {
            Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
            Ok(Some(b)) => {
                let typ = match b.kind {
                    Kind::Read => libc::F_RDLCK,
                    Kind::Write => libc::F_WRLCK,
                };
                reply.locked(b.start, b.end, typ, b.pid)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let _as = self.serve_as(req, "setlk", ino.0);
        match lock_request(req, ino, fh, lock_owner, start, end, typ, pid) {
            Ok(r) => self.core.setlk(r, sleep, move |result| reply_empty(reply, result)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match owned_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let owner = (req.uid(), req.gid());
        self.changing(req, "create", parent.0, true, move |fs| {
            fs.create_now(parent, &name, mode & !umask & 0o7777, owner, flags, reply)
        });
    }
}

impl CellFs {
    /// Serves a CREATE of `name` in `parent` (see [`Filesystem::create`]).
    fn create_now(&self, parent: INodeNo, name: &str, perm: u32, owner: (u32, u32), flags: i32, reply: ReplyCreate) {
        let exclusive = flags & libc::O_EXCL != 0;
        match self.core.create(parent.0, name, perm, owner.0, owner.1, exclusive) {
            Ok((mut e, mut opened)) => {
                // A name another node made meanwhile is opened, not made: an
                // O_TRUNC applies to it (the kernel takes it as done).
                if flags & libc::O_TRUNC != 0 && e.status.size > 0 {
                    if let Err(err) = self.truncate_opened(e.ino, &mut opened) {
                        return reply.error(err);
                    }
                    e.status.size = 0;
                }
                let fh = FileHandle(opened.fh);
                let a = attr(&e);
                let append = flags & libc::O_APPEND != 0;
                let fopen = self.appending(opened.fh, append);
                match self.backing(e.ino, &opened, !append, |f| reply.open_backing(f)) {
                    Ok(backing) => {
                        self.core.note_entries([(e.ino, parent.0, name)]);
                        match backing {
                            Some(b) => {
                                reply.created_passthrough(&e.ttl, &a, Generation(0), fh, FopenFlags::empty(), &b)
                            }
                            None => reply.created(&e.ttl, &a, Generation(0), fh, fopen),
                        }
                    }
                    Err(e) => reply.error(e),
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }
}
