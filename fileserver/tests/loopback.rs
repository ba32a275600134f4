//! Loopback: a real server on 127.0.0.1:0 in-process, driven through the
//! protocol's own `Connector`.

use cellfs_fileserver::config::{CA_PEM, InitOptions};
use cellfs_fileserver::{ServeOptions, Server, ServerError, init};
use cellfs_protocol::message::{Break, Renewal, Reply, Request, ServerMessage};
use cellfs_protocol::pieces::PieceSource;
use cellfs_protocol::tls::Credential;
use cellfs_protocol::transport::{Bytes, CallError, Connector, RpcClient};
use cellfs_protocol::{ErrorCode, Fid, Status, codec};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
    }
}

async fn start(data: &Path) -> Running {
    start_with(data, None).await
}

async fn start_with(data: &Path, journal_len: Option<u64>) -> Running {
    let opts = ServeOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        journal_len,
    };
    let server = Server::open_with(data, &opts).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

fn new_cell() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cell");
    init(&InitOptions {
        data: data.clone(),
        cell: "test".into(),
        listen: "127.0.0.1:7000".into(),
        promise_secs: 600,
    })
    .unwrap();
    (tmp, data)
}

async fn client(data: &Path, addr: SocketAddr) -> RpcClient {
    let ca = std::fs::read_to_string(data.join(CA_PEM)).unwrap();
    let cred = Credential {
        cert_pem: std::fs::read_to_string(data.join("admin/client.pem")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("admin/client.key")).unwrap(),
    };
    Connector::new(addr, &ca, Some(&cred)).unwrap().connect().await.unwrap()
}

async fn root(c: &RpcClient) -> Status {
    match c.call(&Request::Hello).await.unwrap() {
        Reply::Hello { root_volume, .. } => match c.call(&Request::GetRoot { volume: root_volume }).await.unwrap() {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

async fn create(c: &RpcClient, dir: Fid, name: &str) -> Status {
    let req = Request::Create {
        dir,
        name: name.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        exclusive: true,
    };
    match c.call(&req).await.unwrap() {
        Reply::Created { status, .. } => status,
        other => panic!("{other:?}"),
    }
}

async fn store(c: &RpcClient, fid: Fid, bytes: &[u8]) -> Result<Status, CallError> {
    let req = Request::StoreData {
        fid,
        offset: 0,
        len: bytes.len() as u64,
        truncate: Some(0),
        mtime: None,
        expect: None,
    };
    c.store_data(&req, &mut &bytes[..]).await
}

async fn fetch(c: &RpcClient, fid: Fid) -> Vec<u8> {
    let mut out = Vec::new();
    let status = c.fetch_data(fid, &mut out).await.unwrap();
    assert_eq!(status.size, out.len() as u64);
    out
}

fn code(r: Result<Reply, CallError>) -> Option<ErrorCode> {
    r.unwrap_err().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_end_to_end() {
    let (_tmp, data) = new_cell();
    let server = start(&data).await;
    let a = client(&data, server.addr).await;
    let r = root(&a).await;

    // 0 B and 1 MiB files round trip.
    let empty = create(&a, r.fid, "empty").await;
    assert_eq!(fetch(&a, empty.fid).await, b"");
    let big = create(&a, r.fid, "big").await;
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let stored = store(&a, big.fid, &payload).await.unwrap();
    assert_eq!(stored.size, 1 << 20);
    assert_eq!(fetch(&a, big.fid).await, payload);

    // Names are validated by the server.
    let bad = Request::Lookup {
        dir: r.fid,
        name: "a/b".into(),
    };
    assert_eq!(code(a.call(&bad).await), Some(ErrorCode::InvalidName));
    let long = Request::Lookup {
        dir: r.fid,
        name: "x".repeat(256),
    };
    assert_eq!(code(a.call(&long).await), Some(ErrorCode::NameTooLong));

    // A second client holding a promise on the root hears about a new name
    // before the creator gets its reply.
    let b = client(&data, server.addr).await;
    match b.call(&Request::ReadDir { dir: r.fid }).await.unwrap() {
        Reply::Dir { entries, .. } => assert_eq!(entries.len(), 2),
        other => panic!("{other:?}"),
    }
    let listener = {
        let b = b.clone();
        tokio::spawn(async move {
            let (msg, ack) = b.accept_server_message().await.unwrap();
            ack.ack().await.unwrap();
            msg
        })
    };
    create(&a, r.fid, "new").await;
    let msg = tokio::time::timeout(Duration::from_secs(1), listener)
        .await
        .expect("break delivered before the creator's reply")
        .unwrap();
    assert_eq!(
        msg,
        ServerMessage::Break(vec![Break {
            fid: r.fid,
            names: vec!["new".into()],
            deleted: false,
            // The fourth change in root.cell: create, create, store, create.
            seq: 4,
        }])
    );
    // The creator's own promise is not broken; a's change counts one break.
    let stats = match a.call(&Request::Stats).await.unwrap() {
        Reply::Stats(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(stats.breaks_sent, 1);
    assert_eq!(stats.connections, 2);
    let again = match a.call(&Request::Stats).await.unwrap() {
        Reply::Stats(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(again.rpcs, stats.rpcs, "Stats does not count itself");

    // Quota: refused before anything lands, and the connection stays usable.
    let vol = match a
        .call(&Request::CreateVolume {
            name: "small".into(),
            quota: 4,
            server: None,
        })
        .await
        .unwrap()
    {
        Reply::Volume(v) => v,
        other => panic!("{other:?}"),
    };
    let small_root = Fid::root(vol.id);
    let f = create(&a, small_root, "f").await;
    let err = store(&a, f.fid, b"12345678").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded));
    assert_eq!(fetch(&a, f.fid).await, b"");
    assert!(matches!(a.call(&Request::Ping).await.unwrap(), Reply::Ok));

    // A malformed frame gets BadRequest.
    let (mut send, mut recv) = a.connection().open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    send.finish().unwrap();
    let reply: Result<Reply, cellfs_protocol::RpcError> = codec::read_frame(&mut recv, 1 << 20).await.unwrap();
    assert_eq!(reply.unwrap_err().code, ErrorCode::BadRequest);

    // No credential, no RPC.
    let ca = std::fs::read_to_string(data.join(CA_PEM)).unwrap();
    let anon = Connector::new(server.addr, &ca, None).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match anon.connect().await {
            Err(_) => true,
            Ok(c) => c.call(&Request::Ping).await.is_err(),
        }
    })
    .await
    .unwrap_or(true);
    assert!(outcome, "a client without a credential completed an RPC");

    a.close();
    b.close();
    server.stop().await;

    // Restart on the same folder: the data survived.
    let server = start(&data).await;
    let c = client(&data, server.addr).await;
    let r2 = root(&c).await;
    assert_eq!(r2.fid, r.fid);
    assert_eq!(fetch(&c, big.fid).await, payload);
    c.close();
    server.stop().await;
}

/// (incarnation, current, changed) of a `Reconnect`.
async fn reconnect(
    c: &RpcClient,
    volume: u64,
    incarnation: u64,
    since: u64,
    fids: &[Fid],
) -> (u64, u64, Option<Vec<Fid>>) {
    let req = Request::Reconnect {
        volume,
        incarnation,
        since,
        fids: fids.to_vec(),
    };
    match c.call(&req).await.unwrap() {
        Reply::Reconnected {
            incarnation,
            current,
            changed,
        } => (incarnation, current, changed),
        other => panic!("{other:?}"),
    }
}

async fn stats(c: &RpcClient) -> cellfs_protocol::Stats {
    match c.call(&Request::Stats).await.unwrap() {
        Reply::Stats(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Waits for one server message on `c`, acknowledges it and returns it.
fn next_message(c: &RpcClient) -> tokio::task::JoinHandle<ServerMessage> {
    let c = c.clone();
    tokio::spawn(async move {
        let (msg, ack) = c.accept_server_message().await.unwrap();
        ack.ack().await.unwrap();
        msg
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_covers_the_gap_and_grants_real_promises() {
    let (_tmp, data) = new_cell();
    let server = start(&data).await;
    let a = client(&data, server.addr).await;
    let r = root(&a).await;
    let vol = r.fid.volume;
    let x = create(&a, r.fid, "x").await.fid;
    let y = create(&a, r.fid, "y").await.fid;
    store(&a, x, b"one").await.unwrap();

    // B learns the volume's incarnation and change number (no promises, no grants).
    let b = client(&data, server.addr).await;
    let (inc, since, changed) = reconnect(&b, vol, 0, 0, &[x, y]).await;
    assert_ne!(inc, 0);
    assert_eq!((since, changed), (3, None));
    assert_eq!(stats(&a).await.promises, 3, "a: root, x, y; b: none");

    // While B is away, A changes x (B holds no promise, so it hears nothing).
    store(&a, x, b"two").await.unwrap();
    let (inc2, current, changed) = reconnect(&b, vol, inc, since, &[x, y, r.fid]).await;
    assert_eq!((inc2, current), (inc, 4));
    assert_eq!(changed, Some(vec![x]));

    // The promises on y and the root are real: A's next changes break them,
    // each break numbered with the change that caused it.
    // y is small: B gets its new bytes with the break, and a new promise.
    let msg = next_message(&b);
    let status = store(&a, y, b"three").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(2), msg)
        .await
        .unwrap()
        .unwrap();
    let brk = Break {
        fid: y,
        names: vec![],
        deleted: false,
        seq: 5,
    };
    let want = Renewal {
        brk,
        status,
        data: b"three".to_vec(),
    };
    assert_eq!(msg, ServerMessage::Renewed(vec![want]));
    // That promise is real: the next change of y reaches B again, and a
    // store of part of the file sends the whole file as it now is.
    let msg = next_message(&b);
    let req = Request::StoreData {
        fid: y,
        offset: 1,
        len: 2,
        truncate: None,
        mtime: None,
        expect: None,
    };
    let status = a.store_data(&req, &mut &b"HR"[..]).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(2), msg)
        .await
        .unwrap()
        .unwrap();
    let ServerMessage::Renewed(got) = msg else {
        panic!("{msg:?}")
    };
    assert_eq!(
        (got.len(), &got[0].data[..], &got[0].status),
        (1, &b"tHRee"[..], &status)
    );
    assert_eq!(got[0].brk.seq, 6);
    let msg = next_message(&b);
    create(&a, r.fid, "z").await;
    let msg = tokio::time::timeout(Duration::from_secs(2), msg)
        .await
        .unwrap()
        .unwrap();
    let want = Break {
        fid: r.fid,
        names: vec!["z".into()],
        deleted: false,
        seq: 7,
    };
    assert_eq!(msg, ServerMessage::Break(vec![want]));
    // x changed, so B got no promise on it: A's change of x breaks nothing.
    let sent = stats(&a).await.breaks_sent;
    store(&a, x, b"four").await.unwrap();
    assert_eq!(stats(&a).await.breaks_sent, sent);

    // Unknown volume, and too many FIDs.
    let err = b
        .call(&Request::Reconnect {
            volume: 999,
            incarnation: inc,
            since: 0,
            fids: vec![],
        })
        .await;
    assert_eq!(code(err), Some(ErrorCode::Stale));
    let many = vec![x; cellfs_protocol::message::MAX_BULK_FIDS + 1];
    let err = b.call(&Request::BulkStatus { fids: many }).await;
    assert_eq!(code(err), Some(ErrorCode::BadRequest));
    let many = vec![x; cellfs_protocol::message::MAX_RECONNECT_FIDS + 1];
    let err = b
        .call(&Request::Reconnect {
            volume: vol,
            incarnation: inc,
            since: 7,
            fids: many,
        })
        .await;
    assert_eq!(code(err), Some(ErrorCode::BadRequest));

    a.close();
    b.close();
    server.stop().await;

    // The journal survives a restart: B, up to date through change 8, still
    // gets an exact answer and keeps its copies.
    let server = start(&data).await;
    let b = client(&data, server.addr).await;
    let (inc3, current, changed) = reconnect(&b, vol, inc, 8, &[x, y]).await;
    assert_eq!((inc3, current, changed), (inc, 8, Some(vec![])));
    b.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_a_trimmed_gap_or_another_incarnation_gets_none() {
    let (_tmp, data) = new_cell();
    let server = start_with(&data, Some(2)).await;
    let a = client(&data, server.addr).await;
    let r = root(&a).await;
    let vol = r.fid.volume;
    let (inc, since, _) = reconnect(&a, vol, 0, 0, &[]).await;
    assert_eq!(since, 0);
    let x = create(&a, r.fid, "x").await.fid;
    // Journal of 2: since 0 needs change 1, still there after two changes...
    store(&a, x, b"1").await.unwrap();
    let (_, current, changed) = reconnect(&a, vol, inc, 0, &[x]).await;
    assert_eq!((current, changed.map(|c| c.len())), (2, Some(2)));
    // ...and gone after three.
    store(&a, x, b"2").await.unwrap();
    let before = stats(&a).await.promises;
    let (inc2, current, changed) = reconnect(&a, vol, inc, 0, &[x]).await;
    assert_eq!((inc2, current, changed), (inc, 3, None));
    assert_eq!(reconnect(&a, vol, inc, 1, &[x]).await.2, Some(vec![x]));
    assert_eq!(reconnect(&a, vol, inc.wrapping_add(1), 3, &[x]).await.2, None);
    // BulkStatus answers per FID (the fallback) and grants promises.
    let gone = Fid { unique: 77, ..x };
    match a
        .call(&Request::BulkStatus {
            fids: vec![x, gone, r.fid],
        })
        .await
        .unwrap()
    {
        Reply::BulkStatus(v) => {
            assert_eq!(v.len(), 3);
            assert_eq!(v[0].as_ref().unwrap().size, 1);
            assert_eq!(v[1].as_ref().unwrap_err().code, ErrorCode::Stale);
            assert_eq!(v[2].as_ref().unwrap().fid, r.fid);
        }
        other => panic!("{other:?}"),
    }
    assert!(stats(&a).await.promises >= before);
    a.close();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_folder_is_refused() {
    let (_tmp, data) = new_cell();
    let server = start(&data).await;
    let err = match Server::open(&data, Some("127.0.0.1:0".parse().unwrap())).await {
        Err(e) => e,
        Ok(_) => panic!("a second server opened a folder in use"),
    };
    assert!(matches!(err, ServerError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use by another cellfs-fileserver"), "{err}");
    server.stop().await;
    // Released when the first one stops.
    let server = start(&data).await;
    server.stop().await;
}

/// A store's bytes: `now` right away, `later` once `gate` opens.
struct Gated {
    now: Bytes,
    later: Bytes,
    gate: Option<oneshot::Receiver<()>>,
}

impl PieceSource for Gated {
    async fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        if self.now.is_empty()
            && let Some(gate) = self.gate.take()
        {
            let _ = gate.await;
            self.now = std::mem::take(&mut self.later);
        }
        if self.now.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.now.split_to(max.min(self.now.len()))))
    }
}

/// While the bytes of a large whole store are still arriving, every other
/// change and read of its volume goes on (the store takes the volume's lock
/// only to commit), and then the store lands whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_store_in_flight_holds_up_no_other_change_of_its_volume() {
    let (_tmp, data) = new_cell();
    let server = start(&data).await;
    let a = client(&data, server.addr).await;
    let b = client(&data, server.addr).await;
    let dir = root(&a).await.fid;
    let big = create(&a, dir, "big").await.fid;
    let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let len = bytes.len() as u64;
    let (open, gate) = oneshot::channel();
    let mut all = Bytes::from(bytes.clone());
    let mut src = Gated {
        now: all.split_to(1 << 20),
        later: all,
        gate: Some(gate),
    };
    let req = Request::StoreData {
        fid: big,
        offset: 0,
        len,
        truncate: Some(len),
        mtime: None,
        expect: None,
    };
    // `a` answers the breaks `b`'s changes send it, as a node does.
    let acks = {
        let a = a.clone();
        tokio::spawn(async move {
            while let Ok((_, ack)) = a.accept_server_message().await {
                let _ = ack.ack().await;
            }
        })
    };
    let storing = tokio::spawn(async move { a.store_data(&req, &mut src).await });
    let others = async {
        let small = create(&b, dir, "small").await.fid;
        store(&b, small, b"meanwhile").await.unwrap();
        assert_eq!(fetch(&b, small).await, b"meanwhile");
    };
    tokio::time::timeout(Duration::from_secs(10), others)
        .await
        .expect("a change waited for a large store still arriving");
    let _ = open.send(());
    let status = tokio::time::timeout(Duration::from_secs(60), storing)
        .await
        .expect("the large store never finished")
        .unwrap()
        .unwrap();
    assert_eq!(status.size, len);
    assert_eq!(fetch(&b, big).await, bytes);
    acks.abort();
    server.stop().await;
}

fn create_reserved(dir: Fid, name: &str, fid: Fid) -> Request {
    Request::CreateReserved {
        dir,
        name: name.into(),
        fid,
        mode: 0o640,
        uid: 33,
        gid: 33,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fids_set_aside_make_files_once_and_a_store_may_come_first() {
    let (_tmp, data) = new_cell();
    let server = start(&data).await;
    let c = client(&data, server.addr).await;
    let dir = root(&c).await.fid;
    let fids = match c
        .call(&Request::ReserveFids {
            volume: dir.volume,
            count: 10_000,
        })
        .await
        .unwrap()
    {
        Reply::Fids(f) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(fids.len(), cellfs_protocol::MAX_RESERVED_FIDS as usize, "capped");
    let ordinary = create(&c, dir, "ordinary").await;
    assert!(
        fids.iter().all(|f| f.vnode != ordinary.fid.vnode),
        "never handed out again"
    );

    // The store is sent first and waits for the create that follows it.
    let (a, b) = (fids[0], fids[1]);
    let early_store = {
        let c = c.clone();
        tokio::spawn(async move { store(&c, a, b"stored before its create arrived").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!early_store.is_finished(), "the store waits for the create");
    match c.call(&create_reserved(dir, "early", a)).await.unwrap() {
        Reply::Created { status, .. } => {
            assert_eq!(status.fid, a);
            assert_eq!((status.mode, status.uid, status.gid), (0o640, 33, 33));
        }
        other => panic!("{other:?}"),
    }
    let stored = early_store.await.unwrap().unwrap();
    assert_eq!(stored.fid, a);
    assert_eq!(fetch(&c, a).await, b"stored before its create arrived");

    // Once only; not over a taken name; not a FID never set aside or a
    // forged uniquifier; not into another volume's FID.
    assert_eq!(
        code(c.call(&create_reserved(dir, "again", a)).await),
        Some(ErrorCode::Stale)
    );
    assert_eq!(
        code(c.call(&create_reserved(dir, "early", b)).await),
        Some(ErrorCode::Exists)
    );
    assert_eq!(
        code(c.call(&create_reserved(dir, "b", b)).await),
        Some(ErrorCode::Stale),
        "refused FIDs are spent"
    );
    let forged = Fid {
        unique: fids[2].unique + 1,
        ..fids[2]
    };
    assert_eq!(
        code(c.call(&create_reserved(dir, "forged", forged)).await),
        Some(ErrorCode::Stale)
    );
    let never = Fid {
        vnode: fids[255].vnode + 1_000,
        ..fids[255]
    };
    assert_eq!(
        code(c.call(&create_reserved(dir, "never", never)).await),
        Some(ErrorCode::Stale)
    );
    assert_eq!(
        code(c.call(&create_reserved(dir, "bad/name", fids[3])).await),
        Some(ErrorCode::InvalidName)
    );

    // A restart forgets what was set aside; the counters stay past it.
    drop(c);
    server.stop().await;
    let server = start(&data).await;
    let c = client(&data, server.addr).await;
    // Changes wait out the restart grace first.
    tokio::time::sleep(cellfs_fileserver::grace::GRACE).await;
    assert_eq!(
        code(c.call(&create_reserved(dir, "later", fids[4])).await),
        Some(ErrorCode::Stale)
    );
    let after = create(&c, dir, "after").await;
    assert!(after.fid.vnode > fids[255].vnode);
    server.stop().await;
}
