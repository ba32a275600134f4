//! A fault-injection UDP proxy for cutting, delaying or half-cutting the
//! network between cache managers and a fileserver without killing either.
//!
//! [`Proxy::new`] listens on `127.0.0.1:0` and forwards every datagram from a
//! client to the server and back. Each client source address gets its own
//! upstream socket, so several mounts can share one proxy and the server sees
//! them as distinct peers. The [`ProxyMode`] can be switched at any time; it is
//! checked when a datagram is forwarded, so a cut also drops datagrams still
//! waiting out a delay. The proxy runs on its own threads; dropping it stops
//! them and closes its sockets.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the proxy threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Largest datagram forwarded.
const MAX_DATAGRAM: usize = 65_535;

/// What the proxy does with the datagrams it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward both ways at once.
    #[default]
    Pass,
    /// Drop everything: a network cut.
    DropAll,
    /// Drop client → server datagrams, forward server → client ones.
    DropToServer,
    /// Forward client → server datagrams, drop server → client ones.
    DropToClient,
    /// Forward both ways after this delay (in order; lowering the delay does
    /// not overtake datagrams already waiting).
    Delay(Duration),
}

impl ProxyMode {
    fn drops(self, dir: Direction) -> bool {
        match self {
            ProxyMode::Pass | ProxyMode::Delay(_) => false,
            ProxyMode::DropAll => true,
            ProxyMode::DropToServer => dir == Direction::ToServer,
            ProxyMode::DropToClient => dir == Direction::ToClient,
        }
    }
}

/// Datagram counts since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Datagrams forwarded from clients to the server.
    pub to_server: u64,
    /// Datagrams forwarded from the server to clients.
    pub to_client: u64,
    /// Datagrams dropped (either way).
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

struct Shared {
    mode: Mutex<ProxyMode>,
    /// Where client datagrams go (see [`Proxy::redirect`]).
    server: Mutex<SocketAddr>,
    stop: AtomicBool,
    to_server: AtomicU64,
    to_client: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn mode(&self) -> ProxyMode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn server(&self) -> SocketAddr {
        *self.server.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sends `bytes` one hop on if the current mode lets it through.
    fn forward(&self, dir: Direction, out: &UdpSocket, to: Option<SocketAddr>, bytes: &[u8]) {
        if self.mode().drops(dir) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Send errors (e.g. ECONNREFUSED after the server died) are the
        // network's business: the datagram is lost, as it would be on a wire.
        let sent = match to {
            Some(addr) => out.send_to(bytes, addr),
            None => out.send(bytes),
        };
        let counter = match (sent, dir) {
            (Err(_), _) => &self.dropped,
            (Ok(_), Direction::ToServer) => &self.to_server,
            (Ok(_), Direction::ToClient) => &self.to_client,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Forwards `bytes` now, or hands it to the delay thread.
    fn route(
        &self,
        delayed: &Sender<Delayed>,
        dir: Direction,
        out: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        match self.mode() {
            ProxyMode::Delay(d) if !d.is_zero() => {
                let _ = delayed.send(Delayed {
                    due: Instant::now() + d,
                    dir,
                    out: out.clone(),
                    to,
                    bytes: bytes.to_vec(),
                });
            }
            _ => self.forward(dir, out, to, bytes),
        }
    }
}

/// A datagram waiting out a [`ProxyMode::Delay`].
struct Delayed {
    due: Instant,
    dir: Direction,
    out: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    bytes: Vec<u8>,
}

/// A UDP proxy between clients and one server, with switchable faults. See
/// the module docs (`proxy.rs`).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `server`, in [`ProxyMode::Pass`].
    ///
    /// # Panics
    /// When it cannot bind its socket or start its threads.
    pub fn new(server: SocketAddr) -> Self {
        let listener = UdpSocket::bind("127.0.0.1:0").expect("proxy: cannot bind a UDP socket on 127.0.0.1");
        listener.set_read_timeout(Some(POLL)).expect("proxy: set_read_timeout");
        let addr = listener.local_addr().expect("proxy: bound socket has an address");
        let shared = Arc::new(Shared {
            mode: Mutex::new(ProxyMode::Pass),
            server: Mutex::new(server),
            stop: AtomicBool::new(false),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let delay_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("proxy-delay".into())
                .spawn(move || run_delay(&shared, &rx))
                .expect("proxy: cannot start a thread")
        };
        let listen_thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || run_listener(&shared, Arc::new(listener), &tx))
                .expect("proxy: cannot start a thread")
        };
        Proxy {
            addr,
            shared,
            threads: vec![listen_thread, delay_thread],
        }
    }

    /// The address clients should send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server it forwards to.
    pub fn server(&self) -> SocketAddr {
        self.shared.server()
    }

    /// Forwards to `server` from now on, for every client (as if the
    /// address now led to another machine).
    pub fn redirect(&self, server: SocketAddr) {
        *self.shared.server.lock().unwrap_or_else(PoisonError::into_inner) = server;
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Switches to `mode`; applies to every datagram forwarded from now on.
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Forward both ways ([`ProxyMode::Pass`]): heals a cut.
    pub fn pass(&self) {
        self.set_mode(ProxyMode::Pass);
    }

    /// Drop everything ([`ProxyMode::DropAll`]): cuts the network.
    pub fn drop_all(&self) {
        self.set_mode(ProxyMode::DropAll);
    }

    /// Drop what clients send ([`ProxyMode::DropToServer`]).
    pub fn drop_to_server(&self) {
        self.set_mode(ProxyMode::DropToServer);
    }

    /// Drop what the server sends ([`ProxyMode::DropToClient`]).
    pub fn drop_to_client(&self) {
        self.set_mode(ProxyMode::DropToClient);
    }

    /// Forward both ways after `delay` ([`ProxyMode::Delay`]).
    pub fn delay(&self, delay: Duration) {
        self.set_mode(ProxyMode::Delay(delay));
    }

    /// Datagram counts so far, e.g. to check that a client really goes through the proxy.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            to_server: self.shared.to_server.load(Ordering::Relaxed),
            to_client: self.shared.to_client.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Receives from clients; starts an upstream socket and thread per client.
fn run_listener(shared: &Arc<Shared>, listener: Arc<UdpSocket>, delayed: &Sender<Delayed>) {
    // Each client's upstream socket and the server it is connected to.
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, SocketAddr)> = HashMap::new();
    let mut threads = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopped() {
        // Errors other than the poll timeout (e.g. ICMP errors reported on a
        // later recv) are not fatal for a UDP relay: keep going.
        let Ok((n, client)) = listener.recv_from(&mut buf) else {
            continue;
        };
        let server = shared.server();
        let upstream = match upstreams.get_mut(&client) {
            Some((up, to)) if *to == server => up.clone(),
            // Redirected: connecting a UDP socket again points it at the new server.
            Some((up, to)) => {
                if up.connect(server).is_err() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                *to = server;
                up.clone()
            }
            None => {
                let Some(up) = connect_upstream(server) else {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let up = Arc::new(up);
                upstreams.insert(client, (up.clone(), server));
                let (shared, listener, up2, delayed) = (shared.clone(), listener.clone(), up.clone(), delayed.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("proxy-up-{}", client.port()))
                    .spawn(move || run_upstream(&shared, &up2, &listener, client, &delayed));
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => eprintln!("proxy: cannot start an upstream thread for {client}: {e}"),
                }
                up
            }
        };
        shared.route(delayed, Direction::ToServer, &upstream, None, &buf[..n]);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn connect_upstream(server: SocketAddr) -> Option<UdpSocket> {
    let up = UdpSocket::bind("127.0.0.1:0").ok()?;
    up.connect(server).ok()?;
    up.set_read_timeout(Some(POLL)).ok()?;
    Some(up)
}

/// Receives from the server on one client's upstream socket and sends it back to the client.
fn run_upstream(
    shared: &Shared,
    upstream: &Arc<UdpSocket>,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    delayed: &Sender<Delayed>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopped() {
        // A connected UDP socket reports ICMP port-unreachable (server down)
        // as ECONNREFUSED on recv: not fatal, the server may come back.
        let Ok(n) = upstream.recv(&mut buf) else {
            continue;
        };
        shared.route(delayed, Direction::ToClient, listener, Some(client), &buf[..n]);
    }
}

/// Sends delayed datagrams when they are due (FIFO).
fn run_delay(shared: &Shared, rx: &Receiver<Delayed>) {
    while !shared.stopped() {
        let item = match rx.recv_timeout(POLL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        loop {
            let now = Instant::now();
            if now >= item.due || shared.stopped() {
                break;
            }
            std::thread::sleep((item.due - now).min(POLL));
        }
        if !shared.stopped() {
            shared.forward(item.dir, &item.out, item.to, &item.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a datagram that should arrive may take.
    const ARRIVE: Duration = Duration::from_secs(5);
    /// How long to wait to conclude that a datagram was dropped.
    const SILENCE: Duration = Duration::from_millis(300);

    fn socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").unwrap()
    }

    fn recv(sock: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        sock.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 2048];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((buf[..n].to_vec(), from)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv: {e}"),
        }
    }

    /// Client sends `msg` through the proxy; returns what the server got and from where.
    fn to_server(client: &UdpSocket, server: &UdpSocket, proxy: &Proxy, msg: &[u8]) -> Option<SocketAddr> {
        client.send_to(msg, proxy.addr()).unwrap();
        let (got, from) = recv(server, ARRIVE)?;
        assert_eq!(got, msg);
        Some(from)
    }

    #[test]
    fn pass_forwards_both_ways_with_one_upstream_per_client() {
        let server = socket();
        let proxy = Proxy::new(server.local_addr().unwrap());
        assert_eq!(proxy.mode(), ProxyMode::Pass);
        let (c1, c2) = (socket(), socket());
        let up1 = to_server(&c1, &server, &proxy, b"one").expect("c1 -> server");
        let up2 = to_server(&c2, &server, &proxy, b"two").expect("c2 -> server");
        assert_ne!(up1, up2, "two clients share an upstream socket");
        assert_ne!(up1, proxy.addr());
        // The same client keeps its upstream address.
        assert_eq!(to_server(&c1, &server, &proxy, b"again"), Some(up1));

        server.send_to(b"for two", up2).unwrap();
        server.send_to(b"for one", up1).unwrap();
        assert_eq!(recv(&c2, ARRIVE), Some((b"for two".to_vec(), proxy.addr())));
        assert_eq!(recv(&c1, ARRIVE), Some((b"for one".to_vec(), proxy.addr())));
        assert_eq!(recv(&c1, SILENCE), None, "c1 got c2's reply too");
        let stats = proxy.stats();
        assert_eq!((stats.to_server, stats.to_client, stats.dropped), (3, 2, 0));
    }

    #[test]
    fn drop_modes_cut_one_or_both_directions_and_pass_heals() {
        let server = socket();
        let proxy = Proxy::new(server.local_addr().unwrap());
        let client = socket();
        let up = to_server(&client, &server, &proxy, b"hello").expect("pass");

        proxy.drop_all();
        client.send_to(b"cut", proxy.addr()).unwrap();
        assert_eq!(recv(&server, SILENCE), None, "drop_all forwarded to the server");
        server.send_to(b"cut", up).unwrap();
        assert_eq!(recv(&client, SILENCE), None, "drop_all forwarded to the client");

        proxy.drop_to_server();
        client.send_to(b"lost", proxy.addr()).unwrap();
        assert_eq!(recv(&server, SILENCE), None, "drop_to_server forwarded to the server");
        server.send_to(b"back", up).unwrap();
        assert_eq!(recv(&client, ARRIVE).map(|r| r.0), Some(b"back".to_vec()));

        proxy.drop_to_client();
        assert_eq!(to_server(&client, &server, &proxy, b"up"), Some(up));
        server.send_to(b"lost", up).unwrap();
        assert_eq!(recv(&client, SILENCE), None, "drop_to_client forwarded to the client");

        proxy.pass();
        assert_eq!(to_server(&client, &server, &proxy, b"healed"), Some(up));
        server.send_to(b"healed", up).unwrap();
        assert_eq!(recv(&client, ARRIVE).map(|r| r.0), Some(b"healed".to_vec()));
        assert_eq!(proxy.stats().dropped, 4);
    }

    #[test]
    fn delay_holds_datagrams_in_order_and_a_cut_drops_them() {
        let server = socket();
        let proxy = Proxy::new(server.local_addr().unwrap());
        let client = socket();
        let up = to_server(&client, &server, &proxy, b"warm").expect("pass");

        let delay = Duration::from_millis(300);
        proxy.delay(delay);
        let start = Instant::now();
        for msg in [&b"a"[..], b"b", b"c"] {
            client.send_to(msg, proxy.addr()).unwrap();
        }
        for msg in [&b"a"[..], b"b", b"c"] {
            assert_eq!(recv(&server, ARRIVE).map(|r| r.0), Some(msg.to_vec()));
        }
        assert!(start.elapsed() >= delay, "arrived after {:?}", start.elapsed());
        let start = Instant::now();
        server.send_to(b"slow", up).unwrap();
        assert_eq!(recv(&client, ARRIVE).map(|r| r.0), Some(b"slow".to_vec()));
        assert!(start.elapsed() >= delay, "arrived after {:?}", start.elapsed());

        // A datagram still waiting when the network is cut is lost.
        proxy.delay(Duration::from_millis(500));
        client.send_to(b"in flight", proxy.addr()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        proxy.drop_all();
        assert_eq!(recv(&server, Duration::from_millis(800)), None);
    }

    #[test]
    fn dropping_the_proxy_stops_it_and_frees_its_port() {
        let server = socket();
        let proxy = Proxy::new(server.local_addr().unwrap());
        let addr = proxy.addr();
        let client = socket();
        to_server(&client, &server, &proxy, b"x").expect("pass");
        let start = Instant::now();
        drop(proxy);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "drop took {:?}",
            start.elapsed()
        );
        client.send_to(b"after", addr).ok();
        assert_eq!(recv(&server, SILENCE), None, "a dropped proxy still forwards");
        // Its socket is closed: the port can be bound again.
        UdpSocket::bind(addr).expect("the proxy's port is still bound after drop");
    }
}
