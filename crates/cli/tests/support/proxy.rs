//! A TCP proxy on a loopback port that can be cut (its connections dropped, new ones refused)
//! and mended, to cut one process off from a server the others still reach.
#![allow(dead_code)] // not every test binary uses it

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    /// Cancelled to cut; `None` while cut.
    running: Option<CancellationToken>,
}

impl Proxy {
    /// Forwards a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Proxy { addr, target, running: None };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, target) = (CancellationToken::new(), self.target);
        self.running = Some(stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
    }

    /// Forwards again, on the same port.
    pub async fn mend(&mut self) {
        assert!(self.running.is_none(), "not cut");
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
