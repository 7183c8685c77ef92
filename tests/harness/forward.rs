//! Connection forwarders in front of a Docker Engine socket, to reach it the ways other
//! builders are reached: over TCP, or as a standalone buildkitd serving plain gRPC.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the forwarder does with each connection before copying bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy bytes as they come: the Docker Engine API, over another transport.
    Raw,
    /// Switch the daemon connection to HTTP/2 with `POST /grpc` first, so clients speak
    /// plain gRPC as they would to buildkitd.
    PlainGrpc,
}

/// Where the forwarder listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// A free loopback port.
    Tcp,
    /// A unix socket at this path.
    Unix(PathBuf),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

trait Stream: Read + Write + Send + 'static {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>>;
    fn shutdown_how(&self, how: Shutdown);
    fn shutdown_write(&self) {
        self.shutdown_how(Shutdown::Write);
    }
}

impl Stream for TcpStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_how(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

impl Stream for UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_how(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}

/// Forwards every accepted connection to a daemon's unix socket until dropped.
pub struct Forwarder {
    endpoint: String,
    stop: Arc<AtomicBool>,
    /// The client side of every connection accepted so far and not cut.
    live: Arc<Mutex<Vec<Box<dyn Stream>>>>,
    accepted: Arc<AtomicUsize>,
    /// How many of the next connections to close as soon as they are accepted.
    refuse: Arc<AtomicUsize>,
    wake: Listen,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    pub fn start(daemon_socket: &Path, listen: Listen, mode: Mode) -> Self {
        let (listener, endpoint) = match &listen {
            Listen::Tcp => {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
                let addr = l.local_addr().unwrap();
                (Listener::Tcp(l), format!("tcp://{addr}"))
            }
            Listen::Unix(path) => {
                let l = UnixListener::bind(path)
                    .unwrap_or_else(|err| panic!("bind {}: {err}", path.display()));
                (Listener::Unix(l), format!("unix://{}", path.display()))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<Box<dyn Stream>>>> = Arc::default();
        let daemon = daemon_socket.to_path_buf();
        let stopping = Arc::clone(&stop);
        let accepted = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicUsize::new(0));
        let (kept, counted, refusing) = (
            Arc::clone(&live),
            Arc::clone(&accepted),
            Arc::clone(&refuse),
        );
        let accept = std::thread::spawn(move || {
            loop {
                let client: Box<dyn Stream> = match &listener {
                    Listener::Tcp(l) => match l.accept() {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => continue,
                    },
                    Listener::Unix(l) => match l.accept() {
                        Ok((s, _)) => Box::new(s),
                        Err(_) => continue,
                    },
                };
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let refused = refusing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refused {
                    client.shutdown_how(Shutdown::Both);
                    continue;
                }
                if let Ok(clone) = client.try_clone_box() {
                    kept.lock().unwrap().push(clone);
                }
                let daemon = daemon.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &daemon, mode);
                });
            }
        });
        Self {
            endpoint,
            stop,
            live,
            accepted,
            refuse,
            wake: listen,
            accept: Some(accept),
        }
    }

    /// `tcp://127.0.0.1:PORT` or `unix:///path`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the next `n` connections as soon as they are accepted.
    pub fn refuse_next(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Closes every connection accepted so far, as a daemon restart or a network drop would;
    /// new connections are still forwarded.
    pub fn cut(&self) {
        for client in self.live.lock().unwrap().drain(..) {
            client.shutdown_how(Shutdown::Both);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        match &self.wake {
            Listen::Tcp => {
                let _ = TcpStream::connect(self.endpoint.trim_start_matches("tcp://"));
            }
            Listen::Unix(path) => {
                let _ = UnixStream::connect(path);
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(client: Box<dyn Stream>, daemon: &Path, mode: Mode) -> io::Result<()> {
    let mut upstream = UnixStream::connect(daemon)?;
    if mode == Mode::PlainGrpc {
        upstream.write_all(
            b"POST /grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
        )?;
        // Read the response head one byte at a time so no HTTP/2 byte is consumed.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            upstream.read_exact(&mut byte)?;
            head.push(byte[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(io::Error::other("the daemon refused the upgrade"));
        }
    }
    let upstream: Box<dyn Stream> = Box::new(upstream);
    pipe(client, upstream)
}

/// Copies both ways until either side closes.
fn pipe(a: Box<dyn Stream>, b: Box<dyn Stream>) -> io::Result<()> {
    let mut a_read = a.try_clone_box()?;
    let mut b_write = b.try_clone_box()?;
    let there = std::thread::spawn(move || {
        let _ = io::copy(&mut a_read, &mut b_write);
        b_write.shutdown_write();
    });
    let (mut b_read, mut a_write) = (b, a);
    let _ = io::copy(&mut b_read, &mut a_write);
    a_write.shutdown_write();
    let _ = there.join();
    Ok(())
}
