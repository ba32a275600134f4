//! One function per RPC: validate, run the store work on a blocking thread
//! under the volume lock, grant promises, break other clients' promises.

use crate::callbacks::{Callbacks, ClientId, Renewals};
use crate::config::ServerConfig;
use crate::error::{FsError, FsResult, rpc_err};
use crate::security::Who;
use crate::store::Store;
use crate::volume::{Change, Created, Finish, Job, Removed, Renamed, StorePlan, Volume, WrittenAhead};
use cellfs_protocol::acl::Rights;
use cellfs_protocol::message::{
    InlineFile, MAX_BULK_FIDS, MAX_FETCH_FILES, MAX_INLINE_FILE, MAX_INLINE_TOTAL, MAX_RECONNECT_FIDS, Reply, Request,
};
use cellfs_protocol::names::{validate_name, validate_volume_name};
use cellfs_protocol::pieces::PieceSource;
use cellfs_protocol::{
    DirEntry, ErrorCode, Fid, FileKind, RpcError, SetAttr, Special, Stats, Status, Timestamp, VolumeId,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Shared state of every RPC handler.
#[derive(Debug)]
pub struct Context {
    /// Volumes and VLDB.
    pub store: Arc<Store>,
    /// Promise registry.
    pub callbacks: Arc<Callbacks>,
    /// Server configuration.
    pub config: ServerConfig,
    /// Address reported as the server of every volume.
    pub server_addr: String,
    /// Connections to the cell's other fileservers.
    pub peers: crate::peers::Peers,
    /// Who may do what, and the admitted connections.
    pub security: crate::security::Security,
    /// The whole-file locks nodes hold for their processes.
    pub file_locks: crate::file_locks::FileLocks,
    /// File changes wait this out after a restart (`grace.rs`).
    pub grace: crate::grace::Grace,
    /// FIDs set aside for creates nodes answer first (`reserved.rs`).
    pub reserved: crate::reserved::Reserved,
    /// Held by a release while it makes and sends the read-only copy.
    releases: tokio::sync::Mutex<()>,
    rpcs: AtomicU64,
}

/// What a handler answers.
// Built once per RPC and moved once; not worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// A reply frame only.
    Reply(Result<Reply, RpcError>),
    /// A reply (`Data`, `Dump`) followed by the first `len` bytes of `file`.
    Data {
        /// The reply frame.
        reply: Reply,
        /// How many bytes of `file` follow it.
        len: u64,
        /// Where the bytes come from (`None` when there are none).
        file: Option<File>,
    },
}

/// A handler's answer plus how many request data bytes it left unread
/// (the server drains or stops them).
#[derive(Debug)]
pub struct Handled {
    /// The answer.
    pub outcome: Outcome,
    /// Unread `StoreData` bytes still on the stream.
    pub unread: u64,
}

impl From<FsResult<Reply>> for Handled {
    fn from(r: FsResult<Reply>) -> Self {
        Handled {
            outcome: Outcome::Reply(r.map_err(|e| log_err(&e))),
            unread: 0,
        }
    }
}

fn log_err(e: &FsError) -> RpcError {
    if e.is_client() {
        tracing::debug!(error = %e, "request refused");
    } else {
        tracing::warn!(error = %e, "request failed");
    }
    e.to_rpc()
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> FsResult<T> + Send + 'static) -> FsResult<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Largest file whose new version is pushed to the other holders of a
/// promise on it with their break (the cache manager's inline-fetch size).
pub const RENEW_MAX: u64 = 64 << 10;

/// After a store of `bytes` at `offset` committed `status` (under the
/// volume's write lock): the file's new version to push to the other
/// holders of a promise on it, when it is small and there are any. A store
/// of the whole file already holds the bytes; otherwise they are read back.
fn renewal(
    callbacks: &Callbacks,
    v: &Volume,
    client: ClientId,
    status: &Status,
    offset: u64,
    bytes: Vec<u8>,
) -> Option<InlineFile> {
    if status.kind != FileKind::File || status.size > RENEW_MAX || !callbacks.held_by_others(status.fid, client) {
        return None;
    }
    if offset == 0 && bytes.len() as u64 == status.size {
        return Some(InlineFile {
            status: status.clone(),
            data: Some(bytes),
        });
    }
    match v.inline_files(&[status.fid], RENEW_MAX, RENEW_MAX) {
        Ok(mut files) => files.pop()?.ok().filter(|f| f.data.is_some()),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a stored file back to renew promises; breaking them");
            None
        }
    }
}

/// A change in its commit group's queue: its answer, its breaks and
/// renewals, and the error of a group that failed to flush.
type QueuedChange<T> = tokio::sync::oneshot::Receiver<(
    FsResult<(
        T,
        std::collections::HashMap<ClientId, Vec<cellfs_protocol::message::Break>>,
        Renewals,
    )>,
    Option<RpcError>,
)>;

/// Whether a store of `len` bytes is received whole before its change
/// joins a commit group, reading the file's record only there (see
/// `Context::store_small`); larger stores check the record first.
pub(crate) fn stored_in_group(len: u64) -> bool {
    len <= crate::volume::CHUNK as u64
}

fn created_fids(c: &Created) -> Vec<Fid> {
    vec![c.dir.fid, c.status.fid]
}

fn removed_fids(r: &Removed) -> Vec<Fid> {
    std::iter::once(r.dir.fid)
        .chain(r.victim.as_ref().map(|s| s.fid))
        .collect()
}

fn renamed_fids(r: &Renamed) -> Vec<Fid> {
    let mut v = vec![r.from_dir.fid, r.to_dir.fid, r.moved.fid];
    v.extend(r.replaced.as_ref().map(|s| s.fid));
    v.dedup();
    v
}

fn check_name(name: &str) -> FsResult<()> {
    Ok(validate_name(name)?)
}

pub(crate) fn check_volume_name(name: &str) -> FsResult<()> {
    Ok(validate_volume_name(name)?)
}

impl Context {
    /// Builds the handler context.
    pub fn new(
        store: Arc<Store>,
        callbacks: Arc<Callbacks>,
        config: ServerConfig,
        server_addr: String,
        peers: crate::peers::Peers,
    ) -> Self {
        Context {
            store,
            callbacks,
            config,
            server_addr,
            peers,
            security: crate::security::Security::default(),
            file_locks: crate::file_locks::FileLocks::default(),
            grace: crate::grace::Grace::default(),
            reserved: crate::reserved::Reserved::default(),
            releases: tokio::sync::Mutex::new(()),
            rpcs: AtomicU64::new(0),
        }
    }

    /// The server counters.
    pub fn stats(&self) -> Stats {
        Stats {
            rpcs: self.rpcs.load(Ordering::Relaxed),
            breaks_sent: self.callbacks.breaks_sent(),
            promises: self.callbacks.promises(),
            connections: self.callbacks.connections(),
        }
    }

    /// Runs a read under the volume's shared lock and grants `client` promises
    /// on the FIDs `fids` picks from the result before the lock is released.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        vol: Arc<Volume>,
        client: ClientId,
        f: impl FnOnce(&Volume) -> FsResult<T> + Send + 'static,
        fids: impl FnOnce(&T) -> Vec<Fid>,
    ) -> FsResult<T> {
        let _guard = vol.lock.read().await;
        let v = vol.clone();
        let out = blocking(move || f(&v)).await?;
        self.callbacks.grant(client, fids(&out));
        Ok(out)
    }

    /// Runs a change under the volume's exclusive lock, collects the promises
    /// it breaks and grants the changer its new ones, then (lock released)
    /// tells the other holders and waits for them.
    pub(crate) async fn change<T: Send + 'static>(
        &self,
        vol: Arc<Volume>,
        client: ClientId,
        f: impl FnOnce(&Volume) -> FsResult<Change<T>> + Send + 'static,
        fids: impl FnOnce(&T) -> Vec<Fid> + Send + 'static,
    ) -> FsResult<T> {
        self.change_renewing(vol, client, move |v| Ok((f(v)?, None)), fids)
            .await
    }

    /// [`Context::change`] whose change may also return a small file's new
    /// version: the other holders of a promise on it get it with their
    /// break, and a new promise ([`Callbacks::renew`]). The change joins the
    /// volume's next commit group (`volume/group.rs`): it is answered once
    /// the group is durable, its promises granted before the lock is let go.
    async fn change_renewing<T: Send + 'static>(
        &self,
        vol: Arc<Volume>,
        client: ClientId,
        f: impl FnOnce(&Volume) -> FsResult<(Change<T>, Option<InlineFile>)> + Send + 'static,
        fids: impl FnOnce(&T) -> Vec<Fid> + Send + 'static,
    ) -> FsResult<T> {
        self.commit_change(true, vol, client, f, fids).await
    }

    /// Runs a change in the volume's next commit group and answers it once
    /// the group is durable (`eager`) or once it is committed.
    async fn commit_change<T: Send + 'static>(
        &self,
        eager: bool,
        vol: Arc<Volume>,
        client: ClientId,
        f: impl FnOnce(&Volume) -> FsResult<(Change<T>, Option<InlineFile>)> + Send + 'static,
        fids: impl FnOnce(&T) -> Vec<Fid> + Send + 'static,
    ) -> FsResult<T> {
        let queued = self.queue_change(eager, vol, client, f, fids);
        self.change_answered(client, queued).await
    }

    /// Queues a change in its volume's commit group (see
    /// [`Context::commit_change`]); changes run in the order queued.
    fn queue_change<T: Send + 'static>(
        &self,
        eager: bool,
        vol: Arc<Volume>,
        client: ClientId,
        f: impl FnOnce(&Volume) -> FsResult<(Change<T>, Option<InlineFile>)> + Send + 'static,
        fids: impl FnOnce(&T) -> Vec<Fid> + Send + 'static,
    ) -> QueuedChange<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let callbacks = self.callbacks.clone();
        let job: Job = Box::new(move |v: &Volume| -> Finish {
            let changed = f(v);
            Box::new(move |flushed: &FsResult<()>| {
                let answer = changed.map(|(change, renewed)| {
                    let mut breaks = callbacks.take_breaks(Some(client), &change.breaks);
                    let renewals = renewed
                        .map(|file| callbacks.renew(&mut breaks, &file))
                        .unwrap_or_default();
                    if flushed.is_ok() {
                        callbacks.grant(client, fids(&change.value));
                    }
                    (change.value, breaks, renewals)
                });
                let _ = tx.send((answer, flushed.as_ref().err().map(FsError::to_rpc)));
            })
        });
        if eager {
            vol.join_group(job);
        } else {
            vol.join_group_lazy(job);
        }
        rx
    }

    /// Waits for a queued change's group and delivers its breaks.
    async fn change_answered<T>(&self, client: ClientId, rx: QueuedChange<T>) -> FsResult<T> {
        let (answer, unflushed) = rx
            .await
            .map_err(|_| rpc_err(ErrorCode::Io, "the server failed while committing the change"))?;
        let (value, breaks, renewals) = answer?;
        // Readers may see a change whose flush failed: its breaks still go out.
        self.callbacks.deliver_breaks(Some(client), breaks, renewals).await;
        match unflushed {
            Some(e) => Err(FsError::Rpc(e)),
            None => Ok(value),
        }
    }

    /// Answers one request from `who`. `data` is the rest of the request
    /// stream (the bytes of a `StoreData`).
    pub async fn handle<R: AsyncRead + PieceSource + Send + Unpin>(
        &self,
        client: ClientId,
        who: &Who,
        req: Request,
        data: &mut R,
    ) -> Handled {
        if !matches!(req, Request::Stats) {
            self.rpcs.fetch_add(1, Ordering::Relaxed);
        }
        if !self.reserved.any() {
            return self.answer(client, who, req, data).await;
        }
        // After the create the node sent first, which may arrive later.
        let named = crate::reserved::named(&req);
        let until = crate::reserved::until(&req);
        self.reserved.settled(named, until).await;
        // A store queued behind its file's create is answered after the
        // create is, so the writer's close returns only once the other
        // nodes were told of the new name (close-to-open).
        let behind = match until {
            crate::reserved::Until::Queued => named.iter().copied().find(|f| self.reserved.creating(*f).is_some()),
            crate::reserved::Until::Answered => None,
        };
        let handled = self.answer(client, who, req, data).await;
        if let Some(fid) = behind {
            self.reserved.settled(&[fid], crate::reserved::Until::Answered).await;
        }
        handled
    }

    /// [`Self::handle`] once the creates `req` waits for are far enough.
    async fn answer<R: AsyncRead + PieceSource + Send + Unpin>(
        &self,
        client: ClientId,
        who: &Who,
        req: Request,
        data: &mut R,
    ) -> Handled {
        let granted = match self.authorize(who, &req).await {
            Ok(g) => g,
            Err(e) => return refused(e, data_len(&req)),
        };
        if let Some(left) = req.changes_files().then(|| self.grace.left()).flatten() {
            let e = rpc_err(
                ErrorCode::Grace,
                format!(
                    "the fileserver just restarted; changes are taken again in {} ms, once every node has noticed",
                    left.as_millis()
                ),
            );
            return refused(e, data_len(&req));
        }
        if req.replaces_volumes()
            && let Some(left) = self.grace.left()
        {
            // Held rather than refused: the grace is short and these come
            // from vos or another server, which would only repeat them.
            tracing::info!(
                op = req.op_name(),
                wait_ms = left.as_millis(),
                "holding a volume operation until every node has noticed the restart"
            );
            tokio::time::sleep(left).await;
        }
        if let Some((id, server)) = self.remote_holder(&req) {
            if matches!(req, Request::DumpVolume { .. }) {
                return self.forward_dump(&server, &req).await;
            }
            return self.forward_admin(id, server, req).await.into();
        }
        match req {
            Request::Ping => Ok(Reply::Ok).into(),
            Request::Sync { fid } => self.sync(fid).await.into(),
            Request::Hello => Ok(self.hello()).into(),
            Request::Stats => Ok(Reply::Stats(self.stats())).into(),
            Request::GetRoot { volume } => self.get_root(client, volume).await.into(),
            Request::FetchStatus { fid } => self.fetch_status(client, fid).await.map(Reply::Status).into(),
            Request::BulkStatus { fids } => self.bulk_status(client, fids).await.into(),
            Request::Lookup { dir, name } => self.lookup(client, dir, name).await.into(),
            Request::ReadDir { dir } => self.read_dir(client, dir, granted.unwrap_or_default()).await.into(),
            Request::FetchData { fid } => self.fetch_data(client, fid).await,
            Request::StoreData {
                fid,
                offset,
                len,
                truncate,
                mtime,
                expect,
            } => {
                let plan = StorePlan {
                    fid,
                    offset,
                    len,
                    truncate,
                    expect,
                };
                self.store_data(client, plan, mtime, data).await
            }
            Request::SetAttr { fid, attr } => self.set_attr(client, fid, attr).await.into(),
            Request::Create {
                dir,
                name,
                mode,
                uid,
                gid,
                exclusive,
            } => self.create(client, dir, name, mode, uid, gid, exclusive).await.into(),
            Request::ReserveFids { volume, count } => self.reserve_fids(volume, count).await.into(),
            Request::CreateReserved {
                dir,
                name,
                fid,
                mode,
                uid,
                gid,
            } => {
                let made = (fid, mode, uid, gid);
                self.create_reserved(client, dir, name, made).await.into()
            }
            Request::MakeDir {
                dir,
                name,
                mode,
                uid,
                gid,
            } => self.make_dir(client, dir, name, mode, uid, gid).await.into(),
            Request::Symlink {
                dir,
                name,
                target,
                uid,
                gid,
            } => self.symlink(client, dir, name, target, uid, gid).await.into(),
            Request::MakeSpecial {
                dir,
                name,
                special,
                mode,
                uid,
                gid,
            } => self
                .make_special(client, dir, name, special, mode, uid, gid)
                .await
                .into(),
            Request::Link { dir, name, fid } => self.link(client, dir, name, fid).await.into(),
            Request::Remove { dir, name } => self.remove(client, dir, name, false).await.into(),
            Request::RemoveDir { dir, name } => self.remove(client, dir, name, true).await.into(),
            Request::Rename {
                from_dir,
                from_name,
                to_dir,
                to_name,
            } => self.rename(client, from_dir, from_name, to_dir, to_name).await.into(),
            Request::ReadLink { fid } => self.read_link(fid).await.into(),
            Request::GetVolumeStatus { volume } => self.volume_status(volume).await.into(),
            Request::GiveUpCallbacks { fids } => {
                self.callbacks.give_up(client, &fids);
                Ok(Reply::Ok).into()
            }
            Request::CreateVolume {
                name,
                quota,
                server: Some(server),
            } if !crate::vldb::same_server(&server, &self.server_addr) => {
                self.create_remote(name, quota, server).await.into()
            }
            Request::CreateVolume { name, quota, .. } => self.create_volume(name, quota).await.into(),
            Request::LocateVolume { volume } => self.locate_volume(volume).await.into(),
            Request::RegisterServer { address } => self.register_server(address).await.into(),
            Request::InstallVolume { name, id, kind, len } => {
                self.install_volume(client, (name, id, kind, len), data).await
            }
            Request::MoveVolume { name, to } => self.move_volume(name, to).await.into(),
            Request::ListVolumes => self.list_volumes().await.into(),
            Request::ExamineVolume { name } => self.examine_volume(name).await.into(),
            Request::RemoveVolume { name } => self.remove_volume(client, name).await.into(),
            Request::SetQuota { name, quota } => self.set_quota(name, quota).await.into(),
            Request::MakeMount {
                dir,
                name,
                volume,
                read_write,
            } => self.make_mount(client, dir, name, volume, read_write).await.into(),
            Request::GetMountRoot { volume, read_write } => {
                self.get_mount_root(client, volume, read_write).await.into()
            }
            Request::AddSite { name, server } => self.add_site(name, server).await.into(),
            Request::RemoveSite { name, server } => self.remove_site(client, name, server).await.into(),
            Request::Release { name } => self.release(client, name).await.into(),
            Request::SyncVldb => self.sync_vldb().await.into(),
            Request::Reconnect {
                volume,
                incarnation,
                since,
                fids,
            } => self.reconnect(client, volume, incarnation, since, fids).await.into(),
            Request::FetchFiles {
                fids,
                max_file,
                max_total,
            } => self.fetch_files(client, fids, max_file, max_total).await.into(),
            Request::RenameVolume { name, new_name } => self.rename_volume(name, new_name).await.into(),
            Request::LockVolume { name, holder } => self.lock_volume(name, Some(holder)).await.into(),
            Request::UnlockVolume { name } => self.lock_volume(name, None).await.into(),
            Request::BackupVolume { name } => self.backup_volume(client, name).await.into(),
            Request::DumpVolume { name, since } => self.dump_volume(name, since).await,
            Request::RestoreVolume {
                name,
                len,
                overwrite,
                server,
            } => self.restore_volume(client, (name, len, overwrite, server), data).await,
            Request::SetAcl { dir, changes, clear } => self.set_acl(client, who, dir, changes, clear).await.into(),
            Request::GetAcl { dir } => self.get_acl(dir).await.into(),
            Request::GetRights { fid } => self.get_rights(client, who, fid).await.into(),
            Request::AddHost { name, role } => self.add_host(name, role).await.into(),
            Request::RevokeHost { name } => self.revoke_host(name).await.into(),
            Request::ListHosts => self.list_hosts().await.into(),
            req @ (Request::AddUser { .. }
            | Request::RemoveUser { .. }
            | Request::AddGroup { .. }
            | Request::RemoveGroup { .. }
            | Request::AddMember { .. }
            | Request::RemoveMember { .. }) => self.change_principals(req).await.into(),
            Request::ListUsers => Ok(Reply::Users(self.security.snapshot().users)).into(),
            Request::ListGroups => Ok(Reply::Groups(self.security.snapshot().groups)).into(),
            Request::PutSecurity { state } => self.put_security(state).await.into(),
            Request::GetSecurity => Ok(Reply::Security(self.security.snapshot())).into(),
            Request::Lock { fid, op } => self.lock_file(client, fid, op).into(),
        }
    }

    fn hello(&self) -> Reply {
        Reply::Hello {
            cell: self.config.cell.clone(),
            root_volume: self.config.root_volume.clone(),
            promise_secs: self.config.promise_secs,
            max_data: self.config.max_data,
            address: self.server_addr.clone(),
        }
    }

    async fn get_root(&self, client: ClientId, volume: String) -> FsResult<Reply> {
        check_volume_name(&volume)?;
        let vol = self.store.volume_by_name(&volume)?;
        let root = Fid::root(vol.id());
        let s = self.read(vol, client, move |v| v.status(root), |s| vec![s.fid]).await?;
        Ok(Reply::Status(s))
    }

    async fn fetch_status(&self, client: ClientId, fid: Fid) -> FsResult<Status> {
        let vol = self.store.volume(fid.volume)?;
        self.read(vol, client, move |v| v.status(fid), |s| vec![s.fid]).await
    }

    /// One consistent read per volume (under its shared lock), answered per
    /// FID in request order; every status found grants a promise.
    async fn bulk_status(&self, client: ClientId, fids: Vec<Fid>) -> FsResult<Reply> {
        if fids.len() > MAX_BULK_FIDS {
            return Err(rpc_err(
                ErrorCode::BadRequest,
                format!("BulkStatus of {} FIDs; at most {MAX_BULK_FIDS}", fids.len()),
            ));
        }
        let mut by_volume: BTreeMap<VolumeId, Vec<usize>> = BTreeMap::new();
        for (i, fid) in fids.iter().enumerate() {
            by_volume.entry(fid.volume).or_default().push(i);
        }
        let mut out: Vec<Option<Result<Status, RpcError>>> = vec![None; fids.len()];
        for (id, idx) in by_volume {
            let wanted: Vec<Fid> = idx.iter().map(|&i| fids[i]).collect();
            let results = match self.store.volume(id) {
                Ok(vol) => {
                    self.read(
                        vol,
                        client,
                        move |v| v.statuses(&wanted),
                        |r| r.iter().filter_map(|s| s.as_ref().ok().map(|s| s.fid)).collect(),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match results {
                Ok(results) => {
                    for (i, r) in idx.into_iter().zip(results) {
                        out[i] = Some(r.map_err(|e| e.to_rpc()));
                    }
                }
                Err(e) => {
                    let e = e.to_rpc();
                    for i in idx {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let missing = || RpcError::new(ErrorCode::Io, "no answer computed");
        Ok(Reply::BulkStatus(
            out.into_iter().map(|r| r.unwrap_or_else(|| Err(missing()))).collect(),
        ))
    }

    /// `FetchFiles`: small files of one volume with their bytes, in one read;
    /// every status returned grants a promise.
    async fn fetch_files(&self, client: ClientId, fids: Vec<Fid>, max_file: u64, max_total: u64) -> FsResult<Reply> {
        if fids.len() > MAX_FETCH_FILES {
            return Err(rpc_err(
                ErrorCode::BadRequest,
                format!("FetchFiles of {} FIDs; at most {MAX_FETCH_FILES}", fids.len()),
            ));
        }
        let Some(volume) = fids.first().map(|f| f.volume) else {
            return Ok(Reply::Files(Vec::new()));
        };
        if fids.iter().any(|f| f.volume != volume) {
            return Err(rpc_err(ErrorCode::BadRequest, "FetchFiles across volumes"));
        }
        let (max_file, max_total) = (max_file.min(MAX_INLINE_FILE), max_total.min(MAX_INLINE_TOTAL));
        let vol = self.store.volume(volume)?;
        let files = self
            .read(
                vol,
                client,
                move |v| v.inline_files(&fids, max_file, max_total),
                |r| r.iter().filter_map(|f| f.as_ref().ok().map(|f| f.status.fid)).collect(),
            )
            .await?;
        Ok(Reply::Files(
            files.into_iter().map(|r| r.map_err(|e| e.to_rpc())).collect(),
        ))
    }

    /// `Reconnect`: the journal read and the grants happen under the volume
    /// lock's shared side, so a change either is in the journal read or
    /// comes after the grants and breaks them.
    async fn reconnect(
        &self,
        client: ClientId,
        volume: VolumeId,
        incarnation: u64,
        since: u64,
        fids: Vec<Fid>,
    ) -> FsResult<Reply> {
        if fids.len() > MAX_RECONNECT_FIDS {
            return Err(rpc_err(
                ErrorCode::BadRequest,
                format!("Reconnect listing {} FIDs; at most {MAX_RECONNECT_FIDS}", fids.len()),
            ));
        }
        let vol = self.store.volume(volume)?;
        let answer = self
            .read(
                vol,
                client,
                move |v| v.reconnect(incarnation, since, &fids, MAX_RECONNECT_FIDS),
                |a| a.unchanged.clone(),
            )
            .await?;
        tracing::debug!(
            volume,
            since,
            current = answer.current,
            changed = answer.changed.as_ref().map(Vec::len),
            granted = answer.unchanged.len(),
            "reconnect"
        );
        Ok(Reply::Reconnected {
            incarnation: answer.incarnation,
            current: answer.current,
            changed: answer.changed,
        })
    }

    async fn lookup(&self, client: ClientId, dir: Fid, name: String) -> FsResult<Reply> {
        check_name(&name)?;
        let vol = self.store.volume(dir.volume)?;
        let s = self
            .read(vol, client, move |v| v.lookup(dir, &name), |s| vec![s.fid])
            .await?;
        Ok(Reply::Status(s))
    }

    async fn read_dir(&self, client: ClientId, dir: Fid, rights: Rights) -> FsResult<Reply> {
        let vol = self.store.volume(dir.volume)?;
        let fids =
            |(d, e): &(Status, Vec<DirEntry>)| std::iter::once(d.fid).chain(e.iter().map(|x| x.status.fid)).collect();
        let (dir, entries) = self.read(vol, client, move |v| v.read_dir(dir), fids).await?;
        Ok(Reply::Dir { dir, entries, rights })
    }

    async fn fetch_data(&self, client: ClientId, fid: Fid) -> Handled {
        let opened = async {
            let vol = self.store.volume(fid.volume)?;
            self.read(vol, client, move |v| v.open_data(fid), |(s, _)| vec![s.fid])
                .await
        };
        match opened.await {
            Ok((status, file)) => Handled {
                outcome: Outcome::Data {
                    len: status.size,
                    reply: Reply::Data { status },
                    file,
                },
                unread: 0,
            },
            Err(e) => Err(e).into(),
        }
    }

    async fn store_data<R: AsyncRead + PieceSource + Send + Unpin>(
        &self,
        client: ClientId,
        plan: StorePlan,
        mtime: Option<Timestamp>,
        data: &mut R,
    ) -> Handled {
        if plan.len > self.config.max_data {
            let e = rpc_err(
                ErrorCode::TooLarge,
                format!("store of {} bytes over the limit of {}", plan.len, self.config.max_data),
            );
            return refused(e, plan.len);
        }
        let vol = match self.store.volume(plan.fid.volume) {
            Ok(v) => v,
            Err(e) => return refused(e, plan.len),
        };
        if stored_in_group(plan.len) {
            return self.store_small(client, vol, plan, mtime, data).await;
        }
        if replaces_all(&plan) {
            return self.store_whole_ahead(client, vol, plan, mtime, data).await;
        }
        // A partial store of a large file: its new data file starts as a
        // copy of the old, which no other change may replace meanwhile.
        let (status, breaks) = {
            let _guard = vol.lock.write().await;
            let v = vol.clone();
            let mut pending = match blocking(move || v.prepare_store(plan)).await {
                Ok(p) => p,
                Err(e) => return refused(e, plan.len),
            };
            if let Err(e) = pending.receive(data, plan.offset, plan.len).await {
                return refused(e, u64::MAX);
            }
            let v = vol.clone();
            let change = match blocking(move || v.commit_store(pending, mtime, None)).await {
                Ok(c) => c,
                Err(e) => return refused(e, 0),
            };
            let breaks = self.callbacks.take_breaks(Some(client), &change.breaks);
            self.callbacks.grant(client, [change.value.fid]);
            (change.value, breaks)
        };
        // Stores of more than one chunk leave files too large to renew.
        self.callbacks
            .deliver_breaks(Some(client), breaks, Renewals::new())
            .await;
        Ok(Reply::Status(status)).into()
    }

    /// A store of at most one chunk: the bytes arrive first, then preparing,
    /// writing and committing take one trip to a blocking thread.
    async fn store_small<R: AsyncRead + Unpin>(
        &self,
        client: ClientId,
        vol: Arc<Volume>,
        plan: StorePlan,
        mtime: Option<Timestamp>,
        data: &mut R,
    ) -> Handled {
        // `plan.len` is at most one chunk, so this allocation is bounded.
        let mut bytes = vec![0u8; usize::try_from(plan.len).unwrap_or(0)];
        if let Err(e) = data.read_exact(&mut bytes).await {
            return refused(
                rpc_err(ErrorCode::BadRequest, format!("store data ended early: {e}")),
                u64::MAX,
            );
        }
        // A store of the whole file (what a close sends for a small file) is
        // written and fsynced before it joins its commit group, at once
        // with other writers' stores.
        let (ahead, bytes) = if replaces_all(&plan) {
            let v = vol.clone();
            match blocking(move || v.write_ahead(plan.fid, &bytes).map(|a| (Some(a), bytes))).await {
                Ok(done) => done,
                Err(e) => return refused(e, 0),
            }
        } else {
            (None, bytes)
        };
        self.commit_in_group(client, vol, plan, mtime, ahead, bytes).await
    }

    /// A whole store of more than one chunk: checked, then its bytes are
    /// written into a new data file and fsynced without the volume's lock
    /// (every reader and other change of the volume goes on while they
    /// arrive), and it is adopted and committed in a group.
    async fn store_whole_ahead<R: PieceSource + Send>(
        &self,
        client: ClientId,
        vol: Arc<Volume>,
        plan: StorePlan,
        mtime: Option<Timestamp>,
        data: &mut R,
    ) -> Handled {
        // Refused before its bytes arrive if it cannot be taken now.
        let checked = {
            let _guard = vol.lock.read().await;
            let v = vol.clone();
            blocking(move || v.precheck_store(plan)).await
        };
        if let Err(e) = checked {
            return refused(e, plan.len);
        }
        let v = vol.clone();
        let mut ahead = match blocking(move || v.start_ahead(plan.fid, plan.len)).await {
            Ok(a) => a,
            Err(e) => return refused(e, plan.len),
        };
        if let Err(e) = ahead.receive(data).await {
            return refused(e, u64::MAX);
        }
        let v = vol.clone();
        let ahead = match blocking(move || v.finish_ahead(ahead)).await {
            Ok(a) => a,
            Err(e) => return refused(e, 0),
        };
        self.commit_in_group(client, vol, plan, mtime, Some(ahead), Vec::new())
            .await
    }

    /// Commits a store in the volume's next group: a file written ahead is
    /// adopted, or else `bytes` are written at the plan's offset into a
    /// prepared data file. Other holders of a small file's promise get its
    /// new version with their break.
    async fn commit_in_group(
        &self,
        client: ClientId,
        vol: Arc<Volume>,
        plan: StorePlan,
        mtime: Option<Timestamp>,
        ahead: Option<WrittenAhead>,
        bytes: Vec<u8>,
    ) -> Handled {
        let offset = plan.offset;
        let callbacks = self.callbacks.clone();
        let f = move |v: &Volume| {
            let pending = match ahead {
                Some(ahead) => v.adopt(ahead, plan.expect)?,
                None => {
                    let pending = v.prepare_store(plan)?;
                    pending.write_at(&bytes, offset)?;
                    pending
                }
            };
            let change = v.commit_store(pending, mtime, None)?;
            let renewed = renewal(&callbacks, v, client, &change.value, offset, bytes);
            Ok((change, renewed))
        };
        self.change_renewing(vol, client, f, |s: &Status| vec![s.fid])
            .await
            .map(Reply::Status)
            .into()
    }

    /// Makes every change to `fid`'s volume durable (a lazy create's
    /// durable point when its file is closed unwritten).
    async fn sync(&self, fid: Fid) -> FsResult<Reply> {
        self.store.volume(fid.volume)?.flush_in_group().await?;
        Ok(Reply::Ok)
    }

    async fn set_attr(&self, client: ClientId, fid: Fid, attr: SetAttr) -> FsResult<Reply> {
        let vol = self.store.volume(fid.volume)?;
        let s = self
            .change(vol, client, move |v| v.set_attr_full(fid, &attr), |s| vec![s.fid])
            .await?;
        Ok(Reply::Status(s))
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> FsResult<Reply> {
        check_name(&name)?;
        let vol = self.store.volume(dir.volume)?;
        let f = move |v: &Volume| Ok((v.create(dir, &name, mode, uid, gid, exclusive)?, None));
        // Answered once committed (`volume/unclean.rs`): the file is empty,
        // and its writer's close stores it, durably, which makes this create
        // durable too.
        let c = self.commit_change(false, vol, client, f, created_fids).await?;
        Ok(Reply::Created {
            dir: c.dir,
            status: c.status,
        })
    }

    /// Sets FIDs aside for the asking node's creates (`reserved.rs`).
    async fn reserve_fids(&self, volume: VolumeId, count: u32) -> FsResult<Reply> {
        let count = count.clamp(1, cellfs_protocol::MAX_RESERVED_FIDS);
        let full = || {
            rpc_err(
                ErrorCode::NoSpace,
                "too many FIDs set aside in this volume; create the ordinary way",
            )
        };
        if !self.reserved.has_room(volume, count as usize) {
            return Err(full());
        }
        let vol = self.store.volume(volume)?;
        let f = move |v: &Volume| Ok((v.set_aside(count)?, None));
        // Durable before it is answered: a crash never hands them out again.
        let fids = self.commit_change(true, vol, 0, f, |_| Vec::new()).await?;
        if !self.reserved.add(volume, &fids) {
            return Err(full());
        }
        Ok(Reply::Fids(fids))
    }

    /// Creates a file under a FID set aside for it; requests naming the
    /// FID wait until this is answered.
    async fn create_reserved(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        (fid, mode, uid, gid): (Fid, u32, u32, u32),
    ) -> FsResult<Reply> {
        check_name(&name)?;
        let vol = self.store.volume(dir.volume)?;
        if !self.reserved.begin(fid, dir, uid) {
            return Err(rpc_err(
                ErrorCode::Stale,
                format!("{fid} is not set aside (the fileserver restarted since)"),
            ));
        }
        let f = move |v: &Volume| Ok((v.create_reserved(dir, &name, fid, mode, uid, gid)?, None));
        // Answered once committed, as `create` is; the file's store may
        // queue behind it from now on.
        let queued = self.queue_change(false, vol, client, f, created_fids);
        self.reserved.queued(fid);
        let made = self.change_answered(client, queued).await;
        self.reserved.end(fid);
        let c = made?;
        Ok(Reply::Created {
            dir: c.dir,
            status: c.status,
        })
    }

    async fn make_dir(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Reply> {
        check_name(&name)?;
        self.make_named(client, dir, move |v| v.make_dir(dir, &name, mode, uid, gid))
            .await
    }

    async fn symlink(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        target: String,
        uid: u32,
        gid: u32,
    ) -> FsResult<Reply> {
        check_name(&name)?;
        self.make_named(client, dir, move |v| v.symlink(dir, &name, &target, uid, gid))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn make_special(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        special: Special,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Reply> {
        check_name(&name)?;
        self.make_named(client, dir, move |v| {
            v.make_special(dir, &name, special, mode, uid, gid)
        })
        .await
    }

    /// A change that makes a new name in `dir` (its name already checked),
    /// answered with both statuses.
    async fn make_named(
        &self,
        client: ClientId,
        dir: Fid,
        f: impl FnOnce(&Volume) -> FsResult<Change<Created>> + Send + 'static,
    ) -> FsResult<Reply> {
        let vol = self.store.volume(dir.volume)?;
        let c = self.change(vol, client, f, created_fids).await?;
        Ok(Reply::Created {
            dir: c.dir,
            status: c.status,
        })
    }

    async fn link(&self, client: ClientId, dir: Fid, name: String, fid: Fid) -> FsResult<Reply> {
        check_name(&name)?;
        if dir.volume != fid.volume {
            return Err(rpc_err(ErrorCode::CrossVolume, "hard link across volumes"));
        }
        let vol = self.store.volume(dir.volume)?;
        let f = move |v: &Volume| v.link(dir, &name, fid);
        let c = self.change(vol, client, f, created_fids).await?;
        Ok(Reply::Created {
            dir: c.dir,
            status: c.status,
        })
    }

    async fn remove(&self, client: ClientId, dir: Fid, name: String, is_dir: bool) -> FsResult<Reply> {
        check_name(&name)?;
        let vol = self.store.volume(dir.volume)?;
        let f = move |v: &Volume| {
            if is_dir {
                v.remove_dir(dir, &name)
            } else {
                v.remove(dir, &name)
            }
        };
        let r = self.change(vol, client, f, removed_fids).await?;
        Ok(Reply::Removed {
            dir: r.dir,
            victim: r.victim,
        })
    }

    async fn rename(
        &self,
        client: ClientId,
        from_dir: Fid,
        from_name: String,
        to_dir: Fid,
        to_name: String,
    ) -> FsResult<Reply> {
        check_name(&from_name)?;
        check_name(&to_name)?;
        if from_dir.volume != to_dir.volume {
            return Err(rpc_err(ErrorCode::CrossVolume, "rename across volumes"));
        }
        let vol = self.store.volume(from_dir.volume)?;
        let f = move |v: &Volume| v.rename(from_dir, &from_name, to_dir, &to_name);
        let r = self.change(vol, client, f, renamed_fids).await?;
        Ok(Reply::Renamed {
            from_dir: r.from_dir,
            to_dir: r.to_dir,
            moved: r.moved,
            replaced: r.replaced,
        })
    }

    async fn read_link(&self, fid: Fid) -> FsResult<Reply> {
        let vol = self.store.volume(fid.volume)?;
        let _guard = vol.lock.read().await;
        let v = vol.clone();
        Ok(Reply::Link(blocking(move || v.read_link(fid)).await?))
    }

    async fn volume_status(&self, id: VolumeId) -> FsResult<Reply> {
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || store.info(id, &server)).await?;
        Ok(Reply::Volume(info))
    }

    async fn create_volume(&self, name: String, quota: u64) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || {
            store.check_name_free(&name)?;
            let id = store.create_volume(&name, quota)?;
            store.info(id, &server)
        })
        .await?;
        tracing::info!(volume = %info.name, id = info.id, quota, "created volume");
        Ok(Reply::Volume(info))
    }

    async fn list_volumes(&self) -> FsResult<Reply> {
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let mut list = blocking(move || store.list(&server)).await?;
        let remote = self.remote_volumes().await?;
        // A copy held here of a volume released by another server is listed
        // as that server describes it.
        list.retain(|v| !remote.iter().any(|r| r.id == v.id));
        list.extend(remote);
        Ok(Reply::Volumes(list))
    }

    async fn examine_volume(&self, name: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || {
            let id = store.volume_id(&name)?;
            store.info(id, &server)
        })
        .await?;
        Ok(Reply::Volume(info))
    }

    async fn remove_volume(&self, client: ClientId, name: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        if name == self.config.root_volume {
            return Err(rpc_err(ErrorCode::NotPermitted, "the root volume cannot be removed"));
        }
        let vol = self.rw_volume_of(&name)?;
        let gone = {
            let _guard = vol.lock.write().await;
            let store = self.store.clone();
            blocking(move || store.remove_volume(&name)).await?
        };
        for id in gone {
            tracing::info!(volume = id, "removed volume");
            self.callbacks.break_volume(Some(client), id).await;
        }
        Ok(Reply::Ok)
    }

    /// The read-write volume an admin operation on `name` must lock: the
    /// volume itself, or for a backup clone the volume it copies (whose
    /// changes hand data files to the clone).
    fn rw_volume_of(&self, name: &str) -> FsResult<Arc<Volume>> {
        let id = self.store.volume_id(name)?;
        match self.store.admin(id)?.parent {
            Some(parent) => self.store.volume(parent),
            None => self.store.volume(id),
        }
    }

    async fn rename_volume(&self, name: String, new_name: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        check_volume_name(&new_name)?;
        if name == self.config.root_volume {
            return Err(rpc_err(ErrorCode::NotPermitted, "the root volume cannot be renamed"));
        }
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || {
            store.rename_volume(&name, &new_name)?;
            store.info(store.volume_id(&new_name)?, &server)
        })
        .await?;
        tracing::info!(volume = %info.name, id = info.id, "renamed volume");
        Ok(Reply::Volume(info))
    }

    async fn lock_volume(&self, name: String, holder: Option<String>) -> FsResult<Reply> {
        check_volume_name(&name)?;
        if holder.as_ref().is_some_and(|h| h.is_empty() || h.len() > 256) {
            return Err(rpc_err(ErrorCode::Invalid, "a lock holder is 1 to 256 bytes"));
        }
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || {
            let lock = holder.map(|holder| cellfs_protocol::VolumeLock {
                holder,
                since: Timestamp::now(),
            });
            store.set_lock(&name, lock)?;
            store.info(store.volume_id(&name)?, &server)
        })
        .await?;
        Ok(Reply::Volume(info))
    }

    /// `BackupVolume`: the clone is made under the volume's write lock, then
    /// every client drops what it knew of the previous clone.
    async fn backup_volume(&self, client: ClientId, name: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let vol = self.store.volume_by_name(&name)?;
        let started = std::time::Instant::now();
        let clone = {
            let _guard = vol.lock.write().await;
            let store = self.store.clone();
            blocking(move || store.backup_volume(&name)).await?
        };
        self.callbacks.break_volume(Some(client), clone).await;
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || store.info(clone, &server)).await?;
        tracing::info!(volume = %info.name, id = clone, files = info.files, took = ?started.elapsed(), "made backup clone");
        Ok(Reply::Volume(info))
    }

    async fn add_site(&self, name: String, server: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let store = self.store.clone();
        let this = self.server_addr.clone();
        let vldb = self.config.vldb.is_none();
        let info = blocking(move || {
            if vldb {
                store.check_server(&server)?;
            }
            store.add_site(&name, &server)?;
            store.info(store.volume_id(&name)?, &this)
        })
        .await?;
        Ok(Reply::Volume(info))
    }

    /// `RemoveSite`: when the last read-only copy goes, nodes drop it and
    /// find the read-write volume through their mount points again.
    async fn remove_site(&self, client: ClientId, name: String, server: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let vol = self.store.volume_by_name(&name)?;
        let removed = {
            let _guard = vol.lock.write().await;
            let store = self.store.clone();
            let (n, s) = (name.clone(), server.clone());
            blocking(move || store.remove_site(&n, &s)).await?
        };
        if let Some(ro) = removed {
            self.callbacks.break_volume(Some(client), ro).await;
        }
        self.drop_remote_copy(&name, &server).await?;
        let store = self.store.clone();
        let this = self.server_addr.clone();
        let info = blocking(move || store.info(store.volume_id(&name)?, &this)).await?;
        Ok(Reply::Volume(info))
    }

    /// `Release`: the read-only copy is made again under the volume's write
    /// lock and swapped in whole; then every node holding anything of it
    /// drops it (and after the first release, nodes re-resolve their mount
    /// points, which now lead to the copy). Returns once every node has
    /// acknowledged, so the release is seen everywhere at once.
    async fn release(&self, client: ClientId, name: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let vol = self.store.volume_by_name(&name)?;
        // One release at a time: a second would replace the copy being sent.
        let _releasing = self.releases.lock().await;
        let first = self.store.admin(vol.id())?.readonly.is_none();
        let ro = {
            let _guard = vol.lock.write().await;
            let store = self.store.clone();
            let n = name.clone();
            blocking(move || store.release(&n)).await?
        };
        let failed = self.push_release(&name, ro).await?;
        if first {
            self.callbacks.break_volume(Some(client), vol.id()).await;
        }
        self.callbacks.break_volume(Some(client), ro).await;
        let store = self.store.clone();
        let this = self.server_addr.clone();
        let info = blocking(move || store.info(ro, &this)).await?;
        tracing::info!(volume = %name, files = info.files, "released");
        if !failed.is_empty() {
            return Err(rpc_err(
                ErrorCode::Io,
                format!(
                    "released {name}, but these read-only sites missed it and are marked old (nodes do not read them until a release reaches them): {}",
                    failed.join("; ")
                ),
            ));
        }
        Ok(Reply::Volume(info))
    }

    /// `DumpVolume`: a snapshot is taken under the volume's write lock, the
    /// dump written from it to a temporary file with no lock held (writers
    /// go on), then sent.
    async fn dump_volume(&self, name: String, since: Option<Timestamp>) -> Handled {
        let dumped = async {
            check_volume_name(&name)?;
            let vol = self.store.volume_by_name(&name)?;
            let snap = {
                let _guard = vol.lock.write().await;
                let (store, v) = (self.store.clone(), vol.clone());
                blocking(move || store.dump_snapshot(&v)).await?
            };
            let store = self.store.clone();
            blocking(move || {
                let dumped = store.dump_volume(&vol, &snap, &name, since);
                store.drop_snapshot(&vol, &snap);
                dumped
            })
            .await
        };
        match dumped.await {
            Ok((file, len)) => Handled {
                outcome: Outcome::Data {
                    reply: Reply::Dump { len },
                    len,
                    file: Some(file),
                },
                unread: 0,
            },
            Err(e) => Err(e).into(),
        }
    }

    /// `RestoreVolume`: the dump is received into a temporary file, then
    /// restored under the volume's write lock; clients drop everything they
    /// knew of the volume.
    async fn restore_volume<R: AsyncRead + Unpin>(
        &self,
        client: ClientId,
        (name, len, overwrite, server): (String, u64, bool, Option<String>),
        data: &mut R,
    ) -> Handled {
        if let Err(e) = check_volume_name(&name) {
            return refused(e, len);
        }
        let elsewhere = match self.restore_site(&name, server) {
            Ok(s) => s,
            Err(e) => return refused(e, len),
        };
        let path = match self.receive_dump(len, data).await {
            Ok(p) => p,
            Err(e) => return refused(e, u64::MAX),
        };
        if let Some(server) = elsewhere {
            let result = self.restore_elsewhere(&server, &name, overwrite, &path, len).await;
            let _ = std::fs::remove_file(&path);
            return result.map(Reply::Volume).into();
        }
        let existing = self.rw_volume_of(&name).ok();
        let n = name.clone();
        let result = self
            .build_from_received(client, existing, path, move |store, p| {
                store.restore_volume(&n, p, overwrite)
            })
            .await;
        if let Ok(info) = &result {
            tracing::info!(volume = %info.name, id = info.id, files = info.files, "restored volume");
        }
        result.map(Reply::Volume).into()
    }

    async fn set_quota(&self, name: String, quota: u64) -> FsResult<Reply> {
        check_volume_name(&name)?;
        let store = self.store.clone();
        let server = self.server_addr.clone();
        let info = blocking(move || {
            store.set_quota(&name, quota)?;
            let id = store.volume_id(&name)?;
            store.info(id, &server)
        })
        .await?;
        Ok(Reply::Volume(info))
    }

    async fn make_mount(
        &self,
        client: ClientId,
        dir: Fid,
        name: String,
        volume: String,
        read_write: bool,
    ) -> FsResult<Reply> {
        check_name(&name)?;
        check_volume_name(&volume)?;
        if self.store.volume_id(&volume).is_err() && self.store.location_by_name(&volume)?.is_none() {
            return Err(rpc_err(ErrorCode::NotFound, format!("no volume {volume:?}")));
        }
        let vol = self.store.volume(dir.volume)?;
        let target = cellfs_protocol::names::mount_target(&volume, read_write);
        let f = move |v: &Volume| v.make_mount(dir, &name, &target);
        let c = self.change(vol, client, f, created_fids).await?;
        Ok(Reply::Created {
            dir: c.dir,
            status: c.status,
        })
    }
}

/// A refused `StoreData`: the error, and how much of its data is still to
/// be drained from the stream (`u64::MAX`: stop the stream instead).
/// How many bytes follow the frame of `req` on its stream.
fn data_len(req: &Request) -> u64 {
    match req {
        Request::StoreData { len, .. } | Request::RestoreVolume { len, .. } | Request::InstallVolume { len, .. } => {
            *len
        }
        _ => 0,
    }
}

/// Whether a store is the file's whole new content (what a close sends).
fn replaces_all(plan: &StorePlan) -> bool {
    plan.offset == 0 && plan.len > 0 && plan.truncate == Some(plan.len)
}

pub(crate) fn refused(e: FsError, unread: u64) -> Handled {
    Handled {
        outcome: Outcome::Reply(Err(log_err(&e))),
        unread,
    }
}
