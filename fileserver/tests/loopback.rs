//! Loopback: a real server on 127.0.0.1:0 in-process, driven through the
//! protocol's own `Connector`.

use cellfs_fileserver::config::{CA_PEM, InitOptions};
use cellfs_fileserver::{Server, init};
use cellfs_protocol::message::{Break, Reply, Request, ServerMessage};
use cellfs_protocol::tls::Credential;
use cellfs_protocol::transport::{CallError, Connector, RpcClient};
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
    let server = Server::open(data, Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
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
        cert_pem: std::fs::read_to_string(data.join("client/client.pem")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("client/client.key")).unwrap(),
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
