//! Answers read at the dispatcher's wake-ups, not one wake-up per answer.
//!
//! A load thread that registers each user's socket with tokio's event loop is woken by the kernel
//! for every answer: at 5,000 requests a second with answers 30–100 µs after their requests, that
//! is a context switch and an `epoll_wait` per request, most of what an open-model driver then
//! costs beyond wrk (which never sleeps). Here a lane's sockets sit in an epoll set of its own
//! (the inbox), which the thread's event loop does not watch while requests are falling due: the
//! dispatcher, which wakes on its timer at least every [`QUANTUM`](crate::engine::QUANTUM) anyway,
//! collects every answer that arrived meanwhile with one non-blocking `epoll_wait`
//! ([`Inbox::harvest`]) and wakes those users, which costs no thread wake-up of its own. When the
//! next slot is further off than that, the dispatcher [`watch`](Inbox::watch)es the inbox instead,
//! so an answer never waits long to be read.
//!
//! Latency stays exact: each read carries the kernel's receive timestamp (`SO_TIMESTAMPNS`, the
//! time the answer's last bytes reached the socket), and that, not the moment the user read it,
//! is when the request was answered ([`Socket::read`]). A read without one falls back to the time
//! of the read, which can only overstate a latency.

use std::convert::Infallible;
use std::io::{self, IoSliceMut, Write as _};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Events taken from the inbox per `epoll_wait`; more are taken by calling it again.
const BATCH: usize = 256;

/// A write that finds the socket's send buffer full (a server that stopped reading) tries again
/// after this long; the inbox does not watch for room to write, which a request of a few hundred
/// bytes on an idle keep-alive connection never lacks otherwise.
const WRITE_RETRY: Duration = Duration::from_millis(1);

#[derive(Debug, Default)]
struct Entry {
    /// The socket had something to read since its user last waited: a read will not block.
    ready: bool,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Entry>,
    free: Vec<usize>,
}

/// One load thread's sockets and the users waiting on them.
#[derive(Debug)]
pub struct Inbox {
    epoll: Epoll,
    entries: Mutex<Entries>,
    /// Exchanges under way on this inbox's sockets ([`Inbox::begin`]).
    underway: AtomicUsize,
    /// The last exchange under way ended.
    settled: Notify,
}

/// An exchange under way; ends when dropped, however the exchange ends.
#[derive(Debug)]
pub struct Underway(Arc<Inbox>);

impl Drop for Underway {
    fn drop(&mut self) {
        if self.0.underway.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_one();
        }
    }
}

impl Inbox {
    pub fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            entries: Mutex::new(Entries::default()),
            underway: AtomicUsize::new(0),
            settled: Notify::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks an exchange as under way until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Underway {
        self.underway.fetch_add(1, Ordering::AcqRel);
        Underway(self.clone())
    }

    /// Exchanges under way.
    pub fn underway(&self) -> usize {
        self.underway.load(Ordering::Acquire)
    }

    /// Takes every answer that arrived since the last harvest and wakes its user; never blocks.
    /// Returns how many sockets had something to read.
    pub fn harvest(&self) -> io::Result<usize> {
        let mut events = [EpollEvent::empty(); BATCH];
        let mut total = 0;
        loop {
            let n = self.epoll.wait(&mut events, EpollTimeout::ZERO)?;
            if n > 0 {
                let mut entries = self.lock();
                for event in &events[..n] {
                    if let Some(entry) = entries.slots.get_mut(event.data() as usize) {
                        entry.ready = true;
                        if let Some(waker) = entry.waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
            total += n;
            if n < BATCH {
                return Ok(total);
            }
        }
    }

    /// Harvests each time an answer arrives, until dropped: for the times the dispatcher would
    /// otherwise sleep long, and for a thread with no dispatcher (tests). The inbox joins the
    /// thread's event loop for as long as this runs.
    pub async fn watch(&self) -> io::Result<Infallible> {
        // A second descriptor of the same epoll set: tokio owns it while the watch lasts and
        // closes it after, which takes the set back out of the event loop.
        let fd: OwnedFd = self.epoll.0.try_clone()?;
        // `with_interest` is deprecated because a borrowed raw fd could be closed under it; its
        // replacement is `unsafe`, which this workspace forbids. Here the `AsyncFd` owns the
        // descriptor (an `OwnedFd`), so it lives exactly as long as the registration.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(fd, Interest::READABLE)?;
        loop {
            let mut ready = fd.readable().await?;
            ready.clear_ready();
            self.harvest()?;
        }
    }

    /// Watches until no exchange is under way and `done` holds (checked each time the last
    /// exchange ends): a load thread's last answers, after its schedule ended.
    pub async fn settle(&self, done: impl Fn() -> bool) -> io::Result<()> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.underway() == 0 && done() {
                return Ok(());
            }
            tokio::select! {
                watched = self.watch() => match watched? {},
                _ = settled => {}
            }
        }
    }

    fn register(&self, stream: &TcpStream) -> io::Result<usize> {
        let token = {
            let mut entries = self.lock();
            match entries.free.pop() {
                Some(token) => {
                    entries.slots[token] = Entry::default();
                    token
                }
                None => {
                    entries.slots.push(Entry::default());
                    entries.slots.len() - 1
                }
            }
        };
        // Edge-triggered: a socket is reported once per arrival, however long its user takes to
        // read it, and a user reads until its read would block before it waits again.
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
            token as u64,
        );
        if let Err(e) = self.epoll.add(stream.as_fd(), event) {
            self.lock().free.push(token);
            return Err(e.into());
        }
        Ok(token)
    }

    fn deregister(&self, stream: &TcpStream, token: usize) {
        // Closing the socket would take it out of the set too; saying so keeps a duplicate
        // descriptor (there is none) from keeping it in.
        let _ = self.epoll.delete(stream.as_fd());
        let mut entries = self.lock();
        if let Some(entry) = entries.slots.get_mut(token) {
            *entry = Entry::default();
            entries.free.push(token);
        }
    }

    /// Ready once the socket `token` may have something to read.
    async fn readable(&self, token: usize) {
        std::future::poll_fn(|cx| {
            let mut entries = self.lock();
            match entries.slots.get_mut(token) {
                Some(entry) if !entry.ready => {
                    entry.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Some(entry) => {
                    entry.ready = false;
                    Poll::Ready(())
                }
                None => Poll::Ready(()),
            }
        })
        .await;
    }
}

/// A connected TCP socket in an [`Inbox`], read with the kernel's receive timestamps.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    inbox: Arc<Inbox>,
    token: usize,
    /// Room for one `SO_TIMESTAMPNS` control message, reused.
    control: Vec<u8>,
    /// A request was written and nothing read since: its answer cannot be there yet.
    sent: bool,
    /// What a read lands in before it is appended to the caller's buffer: zeroed once, where
    /// reading into the buffer's spare room would zero that room on every read.
    scratch: Box<[u8; 4096]>,
}

impl Socket {
    /// Connects to `addr` (through tokio, so the connect does not block the thread) and moves the
    /// socket into `inbox`.
    pub async fn connect(addr: std::net::SocketAddr, inbox: &Arc<Inbox>) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Requests are small and each is written whole: Nagle would only hold them back.
        stream.set_nodelay(true)?;
        // Out of tokio's event loop: still non-blocking, now watched by the inbox only.
        let stream = stream.into_std()?;
        setsockopt(&stream, sockopt::ReceiveTimestampns, &true)?;
        let token = inbox.register(&stream)?;
        Ok(Self {
            stream,
            inbox: inbox.clone(),
            token,
            control: nix::cmsg_space!(TimeSpec),
            sent: false,
            scratch: Box::new([0; 4096]),
        })
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(WRITE_RETRY).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sent = true;
        Ok(())
    }

    /// Appends what has arrived to `buf` (up to 4 KiB), waiting for something if nothing has.
    /// Returns the bytes read (0 at the end of the stream) and when the last of them reached the
    /// socket.
    pub async fn read(&mut self, buf: &mut Vec<u8>) -> io::Result<(usize, Instant)> {
        // Right after a request its answer is still on its way: a read would only find nothing.
        if std::mem::take(&mut self.sent) {
            self.inbox.readable(self.token).await;
        }
        loop {
            match self.try_read() {
                Ok((n, at)) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    return Ok((n, at));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inbox.readable(self.token).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn try_read(&mut self) -> io::Result<(usize, Instant)> {
        let mut iov = [IoSliceMut::new(&mut self.scratch[..])];
        let message = recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut self.control),
            MsgFlags::MSG_DONTWAIT,
        )?;
        let mut arrived = None;
        if let Ok(cmsgs) = message.cmsgs() {
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                    arrived = Some(instant_of(ts));
                }
            }
        }
        Ok((message.bytes, arrived.unwrap_or_else(Instant::now)))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.inbox.deregister(&self.stream, self.token);
    }
}

/// The monotonic instant of a wall-clock receive timestamp: as long ago as it is now. A stamp
/// from the future (the wall clock stepped back) counts as now.
fn instant_of(ts: TimeSpec) -> Instant {
    let stamp = UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
    let now = Instant::now();
    let age = SystemTime::now().duration_since(stamp).unwrap_or_default();
    now.checked_sub(age).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes whatever it reads, after `delay`.
    async fn echo(delay: Duration) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n @ 1..) = socket.read(&mut buf).await {
                        tokio::time::sleep(delay).await;
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_is_timed_by_its_arrival_not_by_when_it_was_read() {
        let addr = echo(Duration::ZERO).await;
        let inbox = Inbox::new().unwrap();
        let mut socket = Socket::connect(addr, &inbox).await.unwrap();
        let sent = Instant::now();
        socket.write_all(b"ping").await.unwrap();
        // Nobody harvests: the answer arrives and waits, unread, in the socket.
        std::thread::sleep(Duration::from_millis(200));
        let _guard = inbox.begin();
        let watch = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.watch().await }
        });
        let mut buf = Vec::new();
        let (n, arrived) = socket.read(&mut buf).await.unwrap();
        let read_at = Instant::now();
        watch.abort();
        assert_eq!(&buf[..n], b"ping");
        // The two clocks are read a moment apart; a millisecond covers that.
        assert!(
            arrived + Duration::from_millis(1) >= sent,
            "arrived before it was sent"
        );
        assert!(
            read_at - arrived >= Duration::from_millis(100),
            "timed by the read ({:?} after sending), not by the kernel's stamp ({:?})",
            read_at - sent,
            arrived - sent
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settle_reads_every_answer_and_waits_for_the_last() {
        let addr = echo(Duration::from_millis(20)).await;
        let inbox = Inbox::new().unwrap();
        let mut users = Vec::new();
        for i in 0..5u8 {
            let inbox = inbox.clone();
            let mut socket = Socket::connect(addr, &inbox).await.unwrap();
            let underway = inbox.begin();
            users.push(tokio::spawn(async move {
                let _underway = underway;
                socket.write_all(&[b'a' + i]).await.unwrap();
                let mut buf = Vec::new();
                let (n, _) = socket.read(&mut buf).await.unwrap();
                buf[..n].to_vec()
            }));
        }
        assert_eq!(inbox.underway(), 5);
        inbox.settle(|| true).await.unwrap();
        assert_eq!(inbox.underway(), 0);
        for (i, user) in users.into_iter().enumerate() {
            assert_eq!(user.await.unwrap(), vec![b'a' + i as u8]);
        }
    }
}
