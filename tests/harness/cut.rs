//! A TCP forwarder that can cut its connections part way: a server's answer that stops in
//! the middle, as when the network or the server dies during a long read.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

struct Shared {
    /// Bytes the server has sent to clients, over every connection.
    served: AtomicU64,
    /// Once `served` would pass this, the connection carrying it is closed both ways.
    limit: AtomicU64,
}

/// A running forwarder to a loopback port; dropping it stops it.
pub struct CutProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards each connection to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder's port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            served: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || forward(client, server, &shared));
                }
            })
        };
        Self {
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Bytes the server has sent through the forwarder so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Cuts the connection that carries the server's byte number `limit` (counted as
    /// [`Self::served`] counts), before that byte; `None` forwards everything.
    pub fn cut_at(&self, limit: Option<u64>) {
        self.shared
            .limit
            .store(limit.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Copies the client's bytes to the server on a thread of their own, and the server's to
/// the client here, counting them and cutting both ways at the limit.
fn forward(client: TcpStream, server: TcpStream, shared: &Shared) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut client_out, mut server_in) = (client, server);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match server_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = shared.served.fetch_add(n as u64, Ordering::SeqCst);
        let limit = shared.limit.load(Ordering::SeqCst);
        if before.saturating_add(n as u64) > limit {
            // What came before the limit goes through; the rest never does.
            let keep = usize::try_from(limit.saturating_sub(before))
                .unwrap_or(n)
                .min(n);
            let _ = client_out.write_all(&buf[..keep]);
            break;
        }
        if client_out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = server_in.shutdown(Shutdown::Both);
    let _ = upstream.join();
}
