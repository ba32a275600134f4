//! The RPCs that span the cell's fileservers: registering a server,
//! locating volumes, mount points that lead to other servers, admin calls
//! forwarded to the server holding a volume, installing a volume sent by
//! another server, pushing a release to remote read-only sites, and moving
//! a volume between servers.

use crate::callbacks::ClientId;
use crate::error::{FsResult, rpc_err};
use crate::rpc::{Context, blocking, check_volume_name};
use crate::schema::Location;
use crate::store::clone_name;
use crate::vldb::same_server;
use cellfs_protocol::{ErrorCode, Fid, Reply, Request, Timestamp, VolumeId, VolumeInfo, VolumeKind};
use tokio::io::{AsyncRead, AsyncReadExt};

impl Context {
    fn is_vldb_server(&self) -> bool {
        self.config.vldb.is_none()
    }

    fn require_vldb_server(&self, op: &str) -> FsResult<()> {
        match &self.config.vldb {
            None => Ok(()),
            Some(first) => Err(rpc_err(
                ErrorCode::NotPermitted,
                format!("{op} is asked of the cell's first server ({first}), which keeps the VLDB"),
            )),
        }
    }

    /// `RegisterServer`: a joining fileserver gets its index.
    pub(crate) async fn register_server(&self, address: String) -> FsResult<Reply> {
        self.require_vldb_server("registering a fileserver")?;
        cellfs_protocol::transport::resolve(&address).map_err(|_| {
            rpc_err(
                ErrorCode::Invalid,
                format!("server address {address:?} does not resolve"),
            )
        })?;
        let store = self.store.clone();
        let a = address.clone();
        let index = blocking(move || store.register_server(&a)).await?;
        tracing::info!(server = %address, index, "fileserver registered");
        Ok(Reply::Registered { index })
    }

    /// The read-only sites of read-write volume `rw` that hold the current
    /// release, best first.
    fn current_sites(&self, rw: VolumeId) -> FsResult<Vec<String>> {
        let admin = self.store.admin(rw)?;
        let old = self.store.old_sites(rw)?;
        Ok(admin
            .ro_sites
            .into_iter()
            .filter(|s| !old.iter().any(|o| same_server(o, s)))
            .collect())
    }

    /// `LocateVolume`: the servers holding volume `id`.
    pub(crate) async fn locate_volume(&self, id: VolumeId) -> FsResult<Reply> {
        if let Some(loc) = self.store.location(id)? {
            // A read-write volume has one site; a released copy's are
            // known to the server that released it.
            if loc.name.ends_with(".readonly")
                && let Some(sites) = self.remote_sites(id, &loc.server).await
            {
                return Ok(Reply::Located(sites));
            }
            return Ok(Reply::Located(vec![loc.server]));
        }
        if let Ok(vol) = self.store.volume(id) {
            let admin = self.store.admin(vol.id())?;
            let sites = match (admin.kind, admin.parent) {
                (VolumeKind::ReadOnly, Some(rw)) => self.current_sites(rw)?,
                _ => Vec::new(),
            };
            if sites.is_empty() {
                return Ok(Reply::Located(vec![self.server_addr.clone()]));
            }
            return Ok(Reply::Located(sites));
        }
        Err(rpc_err(ErrorCode::NotFound, format!("no volume {id} in the VLDB")))
    }

    /// The released copy of volume `name`, which `server` holds, and its
    /// sites: asked of `server`; when it does not answer, a copy held here.
    async fn remote_copy(&self, name: &str, server: &str) -> FsResult<Option<(VolumeId, Vec<String>)>> {
        let ro = clone_name(name, VolumeKind::ReadOnly);
        match self
            .peers
            .call(server, &Request::ExamineVolume { name: ro.clone() })
            .await
        {
            Ok(Reply::Volume(info)) => {
                let sites = self
                    .remote_sites(info.id, server)
                    .await
                    .unwrap_or(vec![server.to_owned()]);
                Ok(Some((info.id, sites)))
            }
            Err(e) if e.to_rpc().code == ErrorCode::NotFound => Ok(None),
            _ => Ok(self
                .store
                .volume_id(&ro)
                .ok()
                .map(|id| (id, vec![self.server_addr.clone()]))),
        }
    }

    /// The sites another server gives for its volume `id` (a read-only copy
    /// it released knows them all), if it answers.
    async fn remote_sites(&self, id: VolumeId, server: &str) -> Option<Vec<String>> {
        if !self.is_vldb_server() {
            return None;
        }
        match self.peers.call(server, &Request::LocateVolume { volume: id }).await {
            Ok(Reply::Located(sites)) if !sites.is_empty() => Some(sites),
            _ => None,
        }
    }

    /// `GetMountRoot`: where a mount point leads, with the root's status
    /// when this server holds it.
    pub(crate) async fn get_mount_root(&self, client: ClientId, volume: String, read_write: bool) -> FsResult<Reply> {
        check_volume_name(&volume)?;
        if self.store.volume_id(&volume).is_err()
            && let Some((id, loc)) = self.store.location_by_name(&volume)?
        {
            // The volume's server knows whether it has a released copy and
            // where; the root's status is the node's to fetch from a site.
            if !read_write && let Some((ro, sites)) = self.remote_copy(&volume, &loc.server).await? {
                return Ok(Reply::MountRoot {
                    volume: ro,
                    sites,
                    root: None,
                });
            }
            return Ok(Reply::MountRoot {
                volume: id,
                sites: vec![loc.server],
                root: None,
            });
        }
        let vol = self.store.mount_volume(&volume, read_write)?;
        let id = vol.id();
        let admin = self.store.admin(id)?;
        let sites = match (admin.kind, admin.parent) {
            (VolumeKind::ReadOnly, Some(rw)) => self.current_sites(rw)?,
            _ => vec![self.server_addr.clone()],
        };
        if !sites.iter().any(|s| same_server(s, &self.server_addr)) {
            return Ok(Reply::MountRoot {
                volume: id,
                sites,
                root: None,
            });
        }
        let root = Fid::root(id);
        let s = self.read(vol, client, move |v| v.status(root), |s| vec![s.fid]).await?;
        Ok(Reply::MountRoot {
            volume: id,
            sites,
            root: Some(s),
        })
    }

    /// `CreateVolume` on another server: that server makes it, the VLDB
    /// records where it is.
    pub(crate) async fn create_remote(&self, name: String, quota: u64, server: String) -> FsResult<Reply> {
        self.require_vldb_server("creating a volume on another server")?;
        let store = self.store.clone();
        let (n, s) = (name.clone(), server.clone());
        blocking(move || {
            store.check_server(&s)?;
            store.check_name_free(&n)
        })
        .await?;
        let req = Request::CreateVolume {
            name: name.clone(),
            quota,
            server: None,
        };
        let info = expect_volume(self.peers.call(&server, &req).await?)?;
        self.note_location(&info, &server).await?;
        tracing::info!(volume = %name, id = info.id, %server, "created volume on another server");
        Ok(Reply::Volume(info))
    }

    async fn note_location(&self, info: &VolumeInfo, server: &str) -> FsResult<()> {
        let store = self.store.clone();
        let (id, loc) = (
            info.id,
            Location {
                name: info.name.clone(),
                server: server.to_owned(),
            },
        );
        blocking(move || store.set_location(id, Some(&loc))).await
    }

    /// The server holding volume `name` when it is not this one, for an
    /// admin request to forward there.
    pub(crate) fn remote_holder(&self, req: &Request) -> Option<(VolumeId, String)> {
        let name = match req {
            Request::ExamineVolume { name }
            | Request::RemoveVolume { name }
            | Request::SetQuota { name, .. }
            | Request::LockVolume { name, .. }
            | Request::UnlockVolume { name }
            | Request::BackupVolume { name }
            | Request::RenameVolume { name, .. }
            | Request::DumpVolume { name, .. }
            | Request::MoveVolume { name, .. }
            | Request::AddSite { name, .. }
            | Request::RemoveSite { name, .. }
            | Request::Release { name } => name,
            _ => return None,
        };
        if !self.is_vldb_server() || self.store.volume_id(name).is_ok() {
            return None;
        }
        // A read-only copy goes with `remsite` at its volume's server; a
        // removal of one asked here is of the copy here (there is none).
        if matches!(req, Request::RemoveVolume { .. }) && name.ends_with(".readonly") {
            return None;
        }
        let (id, loc) = self.store.location_by_name(name).ok()??;
        Some((id, loc.server))
    }

    /// Forwards an admin request about a volume another server holds, and
    /// keeps the VLDB in step with what it did.
    pub(crate) async fn forward_admin(&self, id: VolumeId, server: String, req: Request) -> FsResult<Reply> {
        match &req {
            Request::MoveVolume { to, .. } => {
                let store = self.store.clone();
                let t = to.clone();
                blocking(move || store.check_server(&t)).await?;
            }
            Request::AddSite { server: site, .. } => {
                let store = self.store.clone();
                let s = site.clone();
                blocking(move || store.check_server(&s)).await?;
            }
            Request::RenameVolume { new_name, .. } => {
                let store = self.store.clone();
                let n = new_name.clone();
                blocking(move || store.check_name_free(&n)).await?;
            }
            _ => {}
        }
        let reply = self.peers.call_long(&server, &req).await?;
        let store = self.store.clone();
        match (&req, &reply) {
            (Request::RemoveVolume { .. }, _) => blocking(move || store.set_location(id, None)).await?,
            (Request::RenameVolume { .. } | Request::BackupVolume { .. }, Reply::Volume(info)) => {
                self.note_location(info, &server).await?
            }
            // The read-only copy is named in the VLDB under its read-write
            // volume's server, which knows its sites.
            (Request::Release { .. }, Reply::Volume(info)) => self.note_location(info, &server).await?,
            // The last site gone, so is the copy.
            (Request::RemoveSite { name, .. }, Reply::Volume(info)) if info.sites.len() <= 1 => {
                let ro = clone_name(name, VolumeKind::ReadOnly);
                let store = self.store.clone();
                blocking(move || match store.location_by_name(&ro)? {
                    Some((id, _)) => store.set_location(id, None),
                    None => Ok(()),
                })
                .await?
            }
            // Moved here, the volume is local now (its install dropped the location).
            (Request::MoveVolume { to, .. }, Reply::Volume(info)) if !same_server(to, &self.server_addr) => {
                self.note_location(info, to).await?
            }
            _ => {}
        }
        Ok(reply)
    }

    /// Every volume another server holds, as that server describes it (a
    /// server that does not answer is reported in the log and skipped).
    pub(crate) async fn remote_volumes(&self) -> FsResult<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        for (id, loc, listed) in self.placed_elsewhere().await? {
            match listed {
                Ok(Some(info)) => out.push(info),
                Ok(None) => {
                    tracing::warn!(volume = %loc.name, id, server = %loc.server, "the VLDB places a volume on a server that does not hold it")
                }
                Err(e) => {
                    tracing::warn!(volume = %loc.name, server = %loc.server, error = %e, "cannot describe a volume on another server")
                }
            }
        }
        Ok(out)
    }

    /// Every volume the VLDB places on another server, with what that
    /// server lists under its id (one `ListVolumes` per server). Only the
    /// VLDB server asks: other servers list just their own volumes, so
    /// listings never go round between servers.
    async fn placed_elsewhere(&self) -> FsResult<Vec<(VolumeId, Location, FsResult<Option<VolumeInfo>>)>> {
        if !self.is_vldb_server() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        let locations = blocking(move || store.locations()).await?;
        let mut lists: std::collections::HashMap<String, Result<Vec<VolumeInfo>, String>> =
            std::collections::HashMap::new();
        for (_, loc) in &locations {
            if !lists.contains_key(&loc.server) {
                let listed = match self.peers.call(&loc.server, &Request::ListVolumes).await {
                    Ok(Reply::Volumes(v)) => Ok(v),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                lists.insert(loc.server.clone(), listed);
            }
        }
        Ok(locations
            .into_iter()
            .map(|(id, loc)| {
                let listed = match &lists[&loc.server] {
                    Ok(v) => Ok(v.iter().find(|i| i.id == id).cloned()),
                    Err(e) => Err(rpc_err(ErrorCode::Io, e.clone())),
                };
                (id, loc, listed)
            })
            .collect())
    }

    /// Where a restore of `name` goes: `Some(server)` for another server
    /// (the one asked for, or the one holding the volume), `None` for here.
    pub(crate) fn restore_site(&self, name: &str, server: Option<String>) -> FsResult<Option<String>> {
        let held = self.store.location_by_name(name)?.map(|(_, l)| l.server);
        let here = self.store.volume_id(name).is_ok();
        let target = match (server, held) {
            (Some(s), _) if same_server(&s, &self.server_addr) => None,
            (Some(s), Some(h)) if !same_server(&s, &h) => {
                return Err(rpc_err(
                    ErrorCode::Exists,
                    format!("volume {name} is on {h}; restore it there or move it first"),
                ));
            }
            (Some(_), _) if here => {
                return Err(rpc_err(
                    ErrorCode::Exists,
                    format!(
                        "volume {name} is on {}; restore it there or move it first",
                        self.server_addr
                    ),
                ));
            }
            (Some(s), _) => Some(s),
            (None, held) => held,
        };
        if let Some(s) = &target {
            self.require_vldb_server("restoring onto another server")?;
            self.store.check_server(s)?;
        }
        Ok(target)
    }

    /// Sends a received dump on to `server` to restore there, and records
    /// where the volume is.
    pub(crate) async fn restore_elsewhere(
        &self,
        server: &str,
        name: &str,
        overwrite: bool,
        dump: &std::path::Path,
        len: u64,
    ) -> FsResult<VolumeInfo> {
        let req = Request::RestoreVolume {
            name: name.to_owned(),
            len,
            overwrite,
            server: None,
        };
        let file = std::fs::File::open(dump)?;
        let info = expect_volume(self.peers.call_with_file(server, &req, file, len).await?)?;
        self.note_location(&info, server).await?;
        tracing::info!(volume = %name, id = info.id, %server, "restored volume on another server");
        Ok(info)
    }

    /// `DumpVolume` of a volume another server holds: its dump is fetched
    /// into a temporary file and sent on.
    pub(crate) async fn forward_dump(&self, server: &str, req: &Request) -> crate::rpc::Handled {
        let dumped = async {
            let path = self.store.temp_path("forward")?;
            let result = match self.peers.dump_to_file(server, req, &path).await {
                Ok(len) => std::fs::File::open(&path).map(|f| (f, len)).map_err(Into::into),
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&path);
            result
        };
        match dumped.await {
            Ok((file, len)) => crate::rpc::Handled {
                outcome: crate::rpc::Outcome::Data {
                    reply: Reply::Dump { len },
                    len,
                    file: Some(file),
                },
                unread: 0,
            },
            Err(e) => Err(e).into(),
        }
    }

    /// After `remsite`: the copy on a remote site is deleted there (nodes
    /// reading it drop it) and the site forgotten as old.
    pub(crate) async fn drop_remote_copy(&self, name: &str, site: &str) -> FsResult<()> {
        let store = self.store.clone();
        let n = name.to_owned();
        let rw = blocking(move || store.volume_id(&n)).await?;
        let store = self.store.clone();
        let s = site.to_owned();
        blocking(move || {
            let old: Vec<String> = store
                .old_sites(rw)?
                .into_iter()
                .filter(|o| !same_server(o, &s))
                .collect();
            store.set_old_sites(rw, &old)
        })
        .await?;
        if same_server(site, &self.server_addr) {
            return Ok(());
        }
        let req = Request::RemoveVolume {
            name: clone_name(name, VolumeKind::ReadOnly),
        };
        match self.peers.call(site, &req).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_rpc().code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(rpc_err(
                ErrorCode::Io,
                format!("removed site {site} of {name} from the VLDB, but its copy there could not be deleted: {e}"),
            )),
        }
    }

    /// `SyncVldb`: this server's volumes against the VLDB, then every volume
    /// the VLDB places on another server against what that server holds.
    pub(crate) async fn sync_vldb(&self) -> FsResult<Reply> {
        let store = self.store.clone();
        let mut report = blocking(move || store.sync_vldb()).await?;
        for (id, loc, listed) in self.placed_elsewhere().await? {
            match listed {
                Ok(Some(info)) if info.name == loc.name => {}
                Ok(Some(info)) => report.push(format!(
                    "volume {id} is {} in the VLDB but {} holds it as {}",
                    loc.name, loc.server, info.name
                )),
                Ok(None) => report.push(format!(
                    "{} (id {id}) is placed on {} by the VLDB, which does not hold it",
                    loc.name, loc.server
                )),
                Err(e) => report.push(format!(
                    "{} (id {id}) is placed on {} by the VLDB, which cannot list its volumes: {e}",
                    loc.name, loc.server
                )),
            }
        }
        Ok(Reply::Report(report))
    }

    /// `InstallVolume`: receives a dump sent by another server of the cell
    /// and installs it; every node drops what it knew of the volume.
    pub(crate) async fn install_volume<R: AsyncRead + Unpin>(
        &self,
        client: ClientId,
        (name, id, kind, len): (String, VolumeId, VolumeKind, u64),
        data: &mut R,
    ) -> crate::rpc::Handled {
        if let Err(e) = check_volume_name(&name) {
            return crate::rpc::refused(e, len);
        }
        let path = match self.receive_dump(len, data).await {
            Ok(p) => p,
            Err(e) => return crate::rpc::refused(e, u64::MAX),
        };
        let existing = self.store.volume(id).ok();
        let n = name.clone();
        let result = self
            .build_from_received(client, existing, path, move |store, p| {
                store.install_volume(&n, id, kind, p).map(|()| id)
            })
            .await;
        if let Ok(info) = &result {
            tracing::info!(volume = %info.name, id, kind = kind.short(), files = info.files, "installed volume sent by another server");
        }
        result.map(Reply::Volume).into()
    }

    /// Builds a volume from the received dump at `path` with `build` (which
    /// returns its id) under the write lock of `existing`, the volume it
    /// replaces, if any; then every node drops what it knew of the volume.
    /// The dump file is deleted in any case.
    pub(crate) async fn build_from_received(
        &self,
        client: ClientId,
        existing: Option<std::sync::Arc<crate::volume::Volume>>,
        path: std::path::PathBuf,
        build: impl FnOnce(&crate::store::Store, &std::path::Path) -> FsResult<VolumeId> + Send + 'static,
    ) -> FsResult<VolumeInfo> {
        let built = async {
            let _guard = match &existing {
                Some(v) => Some(v.lock.write().await),
                None => None,
            };
            let (store, p) = (self.store.clone(), path.clone());
            let id = blocking(move || build(&store, &p)).await?;
            drop(_guard);
            self.callbacks.break_volume(Some(client), id).await;
            let store = self.store.clone();
            let server = self.server_addr.clone();
            blocking(move || store.info(id, &server)).await
        };
        let result = built.await;
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Receives the `len` bytes of a dump into a temporary file.
    pub(crate) async fn receive_dump<R: AsyncRead + Unpin>(
        &self,
        len: u64,
        data: &mut R,
    ) -> FsResult<std::path::PathBuf> {
        let path = self.store.temp_path("receive")?;
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            let got = tokio::io::copy(&mut data.take(len), &mut file).await?;
            if got != len {
                return Err(rpc_err(
                    ErrorCode::BadRequest,
                    format!("the dump ended after {got} of {len} bytes"),
                ));
            }
            file.sync_all().await?;
            Ok(())
        };
        match received.await {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Sends the read-only copy `ro` of volume `name` to every remote site.
    /// Returns the sites that failed (each with why); they are marked old,
    /// so nodes do not read them until a release reaches them.
    pub(crate) async fn push_release(&self, name: &str, ro: VolumeId) -> FsResult<Vec<String>> {
        let rw = self.store.volume_id(name)?;
        let sites = self.store.admin(rw)?.ro_sites;
        let ro_name = clone_name(name, VolumeKind::ReadOnly);
        let mut failed = Vec::new();
        let mut old = Vec::new();
        for site in sites.iter().filter(|s| !same_server(s, &self.server_addr)) {
            let sent = async {
                let copy = self.store.volume(ro)?;
                let store = self.store.clone();
                let (c, n) = (copy.clone(), ro_name.clone());
                let (file, len) = blocking(move || store.dump_volume(&c, &c, &n, None)).await?;
                let req = Request::InstallVolume {
                    name: ro_name.clone(),
                    id: ro,
                    kind: VolumeKind::ReadOnly,
                    len,
                };
                self.peers
                    .call_with_file(site, &req, file, len)
                    .await
                    .and_then(expect_volume)
            };
            if let Err(e) = sent.await {
                tracing::warn!(volume = %name, %site, error = %e, "release did not reach a read-only site; it is marked old");
                failed.push(format!("{site}: {e}"));
                old.push(site.clone());
            }
        }
        let store = self.store.clone();
        blocking(move || store.set_old_sites(rw, &old)).await?;
        Ok(failed)
    }

    /// `MoveVolume`: a full dump from a snapshot goes to `to` while writers
    /// go on; then, under the volume's write lock, an incremental dump of
    /// what changed meanwhile, the VLDB records the new site, the local copy
    /// goes, and every node drops its promises (asking again, it is told
    /// the volume moved and finds it on `to`).
    /// Asked of the VLDB server, or (forwarded by it, which then records
    /// the new site) of the server holding the volume.
    pub(crate) async fn move_volume(&self, name: String, to: String) -> FsResult<Reply> {
        check_volume_name(&name)?;
        if same_server(&to, &self.server_addr) {
            return Err(rpc_err(ErrorCode::Invalid, format!("volume {name} is already on {to}")));
        }
        let store = self.store.clone();
        let (n, t) = (name.clone(), to.clone());
        let vldb = self.is_vldb_server();
        let vol = blocking(move || {
            if vldb {
                store.check_server(&t)?;
            }
            store.check_movable(&n)?;
            store.volume_by_name(&n)
        })
        .await?;
        let id = vol.id();
        let started = std::time::Instant::now();
        let since = Timestamp::now();
        self.send_state(&vol, &name, &to, None).await?;
        let guard = vol.lock.write().await;
        let locked = std::time::Instant::now();
        self.send_state(&vol, &name, &to, Some(since)).await?;
        let store = self.store.clone();
        let (n, t) = (name.clone(), to.clone());
        let trash = blocking(move || store.hand_over(&n, &t)).await?;
        drop(guard);
        let writers_waited = locked.elapsed();
        self.callbacks.break_volume(None, id).await;
        let _ = blocking(move || Ok(std::fs::remove_dir_all(trash)?)).await;
        tracing::info!(volume = %name, id, %to, took = ?started.elapsed(), ?writers_waited, "moved volume");
        let info = expect_volume(self.peers.call(&to, &Request::ExamineVolume { name }).await?)?;
        Ok(Reply::Volume(info))
    }

    /// Sends volume `vol`'s state (whole, or what changed since `since`) to
    /// server `to` as its read-write copy.
    async fn send_state(
        &self,
        vol: &std::sync::Arc<crate::volume::Volume>,
        name: &str,
        to: &str,
        since: Option<Timestamp>,
    ) -> FsResult<()> {
        let snap = {
            // The full dump's snapshot is taken under the write lock; the
            // incremental one's caller holds it already.
            let _guard = if since.is_none() {
                Some(vol.lock.write().await)
            } else {
                None
            };
            let (store, v) = (self.store.clone(), vol.clone());
            blocking(move || store.dump_snapshot(&v)).await?
        };
        let store = self.store.clone();
        let (v, n) = (vol.clone(), name.to_owned());
        let dumped = blocking(move || {
            let dumped = store.dump_volume(&v, &snap, &n, since);
            store.drop_snapshot(&v, &snap);
            dumped
        })
        .await;
        let (file, len) = dumped?;
        let req = Request::InstallVolume {
            name: name.to_owned(),
            id: vol.id(),
            kind: VolumeKind::ReadWrite,
            len,
        };
        expect_volume(self.peers.call_with_file(to, &req, file, len).await?)?;
        Ok(())
    }
}

fn expect_volume(reply: Reply) -> FsResult<VolumeInfo> {
    match reply {
        Reply::Volume(info) => Ok(info),
        other => Err(rpc_err(
            ErrorCode::Io,
            format!("unexpected reply from another fileserver: {other:?}"),
        )),
    }
}
