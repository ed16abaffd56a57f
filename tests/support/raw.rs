//! A raw HTTP/1.1 origin that parses what relais sends byte by byte and records
//! every request it reads, as a strict server would see it.
//!
//! It can behave as an origin that reads a request's body before answering, or
//! as one that answers first and then discards the body its headers announced
//! (Go's net/http, Node.js): with that one, a request whose framing headers
//! lie eats the start of the next request on the connection, and the origin
//! then reads something no client sent. Framing it finds suspicious (both
//! Content-Length and Transfer-Encoding, several lengths, a coding other than
//! chunked, bytes it cannot parse) is recorded as a fault.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the origin parsed it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came chunked (else by Content-Length, or none).
    pub chunked: bool,
    /// Trailer fields after a chunked body, in order.
    pub trailers: Vec<(String, String)>,
    /// Bytes of the request head, request line to the empty line.
    pub head_len: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).count()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Read the whole body, then answer.
    BodyFirst,
    /// Answer as soon as the head is read, then read and discard the body.
    AnswerFirst,
}

/// What the origin answers: status, extra headers, body (a HEAD gets no body).
pub type Answer = Arc<dyn Fn(&Seen) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

pub struct RawOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
    task: JoinHandle<()>,
}

/// Why the origin stopped reading a connection.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The sender closed the connection inside a body it had announced: an
    /// aborted request, which the origin discards.
    Truncated(String),
    /// Bytes the origin could not parse, or framing a strict server refuses:
    /// what follows on the connection is no longer where the sender thinks.
    Desync(String),
}

impl RawOrigin {
    pub async fn start(reads: Reads, answer: Answer) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
        let (s, f) = (seen.clone(), faults.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (s, f, answer) = (s.clone(), f.clone(), answer.clone());
                tokio::spawn(async move {
                    if let Err(fault) = serve(tcp, reads, &answer, &s).await {
                        f.lock().unwrap().push(fault);
                    }
                });
            }
        });
        RawOrigin { addr, seen, faults, task }
    }

    /// Every request parsed so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// What the origin could not parse or found badly framed.
    pub fn desyncs(&self) -> Vec<String> {
        let faults = self.faults.lock().unwrap();
        faults.iter().filter_map(|f| if let Fault::Desync(d) = f { Some(d.clone()) } else { None }).collect()
    }

    /// Connections closed inside an announced body.
    pub fn truncated(&self) -> usize {
        self.faults.lock().unwrap().iter().filter(|f| matches!(f, Fault::Truncated(_))).count()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer that echoes the request's target, cacheable for a minute.
pub fn echo_cacheable() -> Answer {
    Arc::new(|s: &Seen| (200, vec![("cache-control".into(), "max-age=60".into())], s.target.clone().into_bytes()))
}

/// Serves one connection until the peer closes; Err describes a framing fault.
async fn serve(mut tcp: TcpStream, reads: Reads, answer: &Answer, seen: &Mutex<Vec<Seen>>) -> Result<(), Fault> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(head_len) = read_head(&mut tcp, &mut buf).await? else { return Ok(()) };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req
            .parse(&buf[..head_len])
            .map_err(|e| Fault::Desync(format!("unparseable request head ({e}): {:?}", head(&buf))))?;
        if !parsed.is_complete() {
            return Err(Fault::Desync(format!("incomplete head: {:?}", head(&buf))));
        }
        let mut s = Seen {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
            head_len,
        };
        buf.drain(..head_len);
        let framing = framing(&s).map_err(Fault::Desync)?;
        if reads == Reads::AnswerFirst {
            respond(&mut tcp, &s, answer).await.map_err(Fault::Truncated)?;
        }
        s.chunked = matches!(framing, Framing::Chunked);
        (s.body, s.trailers) = read_body(&mut tcp, &mut buf, framing).await?;
        if reads == Reads::BodyFirst {
            respond(&mut tcp, &s, answer).await.map_err(Fault::Truncated)?;
        }
        seen.lock().unwrap().push(s);
    }
}

fn head(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned()
}

enum Framing {
    Length(usize),
    Chunked,
}

fn framing(s: &Seen) -> Result<Framing, String> {
    let lengths: Vec<&str> =
        s.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.as_str()).collect();
    let codings: Vec<&str> = s
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Framing::Length(0)),
        ([n], []) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse().map(Framing::Length).map_err(|_| format!("bad content-length {n:?} on {}", s.target))
        }
        ([], ["chunked"]) => Ok(Framing::Chunked),
        (l, t) => Err(format!("framing headers content-length {l:?} transfer-encoding {t:?} on {}", s.target)),
    }
}

/// Reads until a complete head is in `buf`; None on a clean close between requests.
async fn read_head(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<usize>, Fault> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > 256 * 1024 {
            return Err(Fault::Desync("request head over 256 KiB".into()));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = tcp.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(Fault::Desync(format!("connection closed inside a head: {:?}", head(buf))))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn fill(tcp: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> Result<(), Fault> {
    while buf.len() < want {
        let mut chunk = [0u8; 16 * 1024];
        let n = tcp.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Err(Fault::Truncated(format!("closed inside a body ({} of {want} bytes)", buf.len())));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// The body and its trailer fields.
type Body = (Vec<u8>, Vec<(String, String)>);

async fn read_body(tcp: &mut TcpStream, buf: &mut Vec<u8>, framing: Framing) -> Result<Body, Fault> {
    match framing {
        Framing::Length(n) => {
            fill(tcp, buf, n).await?;
            Ok((buf.drain(..n).collect(), Vec::new()))
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut trailers = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    let have = buf.len();
                    fill(tcp, buf, have + 1).await?;
                };
                let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                // Strictly hex digits: no sign, space or 0x that a lenient parser would take.
                let digits = line.split(';').next().unwrap_or("");
                let size = Some(digits)
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|d| usize::from_str_radix(d, 16).ok())
                    .ok_or_else(|| Fault::Desync(format!("bad chunk size line {line:?}")))?;
                buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailer fields, if any, then the empty line that ends the body.
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                                break i;
                            }
                            let have = buf.len();
                            fill(tcp, buf, have + 1).await?;
                        };
                        let line: Vec<u8> = buf.drain(..end + 2).collect();
                        if end == 0 {
                            return Ok((body, trailers));
                        }
                        let line = String::from_utf8_lossy(&line[..end]).into_owned();
                        let Some((name, value)) = line.split_once(':') else {
                            return Err(Fault::Desync(format!("bad trailer line {line:?}")));
                        };
                        trailers.push((name.to_string(), value.trim().to_string()));
                    }
                }
                fill(tcp, buf, size + 2).await?;
                body.extend_from_slice(&buf[..size]);
                if &buf[size..size + 2] != b"\r\n" {
                    return Err(Fault::Desync("chunk not followed by CRLF".into()));
                }
                buf.drain(..size + 2);
            }
        }
    }
}

async fn respond(tcp: &mut TcpStream, s: &Seen, answer: &Answer) -> Result<(), String> {
    let (status, headers, body) = answer(s);
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if s.method != "HEAD" {
        bytes.extend_from_slice(&body);
    }
    tcp.write_all(&bytes).await.map_err(|e| format!("write failed: {e}"))
}
