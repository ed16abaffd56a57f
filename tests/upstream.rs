//! The upstream connection layer against real origins: keep-alive reuse,
//! unix-socket servers, HTTP/2 to origins with a stream cap.

mod support;

use std::future::Future;
use std::time::Duration;

use http::Request;
use support::*;

/// The value of the metrics sample that starts with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{metrics}"))
}

/// Upstream `o` as `upstream` configures it, and a route to it that the cache stays out of.
fn pass_through(upstream: Conf) -> Conf {
    upstream.route_all("o").with("cache = { bypass = true }")
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let o = origin().text("/", "ok").start().await;
    let proxy = relais(pass_through(Conf::new().upstream("o", o.addr))).await;
    for i in 0..20 {
        // A fresh client connection each time: reuse is relais's, not the client's.
        let r = get(&proxy.url(&format!("/r{i}"))).await;
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(o.total_hits(), 20);
    assert_eq!(o.connections(), 1, "every request after the first went on the kept-alive connection");
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert_eq!(sample(&m, "relais_upstream_connections_total{upstream=\"o\",reused=\"false\"}"), 1);
    assert_eq!(sample(&m, "relais_upstream_connections_total{upstream=\"o\",reused=\"true\"}"), 19);
}

/// A server that closes its idle connections: the next request finds the
/// pooled one closed and goes out on a new one, not to the client as a 502.
#[tokio::test]
async fn a_pooled_connection_the_origin_closed_is_replaced() {
    let o = origin().route("/", |_| async { text(200, "bye", &[("connection", "close")]) }).start().await;
    let proxy = relais(pass_through(Conf::new().upstream("o", o.addr))).await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/")).await.text(), "bye");
    }
    assert_eq!(o.connections(), 5);
}

#[tokio::test]
async fn a_unix_socket_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("app.sock");
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let host = req.headers().get("host").map(|h| h.to_str().unwrap().to_string());
            text(200, &format!("{} host={host:?}", req.uri()), &[])
        })
        .start_unix(&socket)
        .await;
    let proxy = relais(pass_through(Conf::new().upstream("o", format!("unix:{}", socket.display())))).await;
    for _ in 0..3 {
        let r = get(&proxy.url("/app?q=1")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("/app?q=1 host=Some({:?})", proxy.addr.to_string()));
    }
    assert_eq!(o.connections(), 1);
}

#[tokio::test]
async fn a_missing_unix_socket_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        relais(pass_through(Conf::new().upstream("o", format!("unix:{}", dir.path().join("none.sock").display()))))
            .await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
}

/// `protocol = "h2c"`: requests reach the origin as HTTP/2, many on one
/// connection, never more at once on a connection than `max_streams`.
#[tokio::test]
async fn an_h2c_upstream_multiplexes_within_max_streams() {
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let host = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
            text(200, &format!("{:?} {host}", req.version()), &[])
        })
        .start()
        .await;
    let proxy =
        relais(pass_through(Conf::new().upstream("o", o.addr).with("protocol = \"h2c\"\nmax_streams = 2"))).await;
    let url = proxy.url("/slow");
    let answers = futures_util::future::join_all((0..6).map(|_| get(&url))).await;
    for r in &answers {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("HTTP/2.0 {}", proxy.addr));
    }
    // Requests that find no room wait for the one connection being opened, so a burst opens no more than it needs.
    let opened = o.connections();
    assert_eq!(opened, 3, "6 concurrent requests at 2 streams per connection");
    // Later requests share the open connections.
    for _ in 0..4 {
        assert_eq!(get(&url).await.status, 200);
    }
    assert_eq!(o.connections(), opened);
    let m = proxy.admin("GET", "/metrics", "").await.text();
    assert!(sample(&m, "relais_upstream_connections_total{upstream=\"o\",reused=\"true\"}") >= 4);
}

/// gRPC through relais with a real gRPC server and client (tonic): unary and
/// server-streaming calls, their status in the trailers, `te: trailers` kept.
mod grpc {
    use super::*;
    use std::pin::Pin;

    use futures_util::{Stream, StreamExt};
    use http::uri::PathAndQuery;
    use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
    use tonic_prost::ProstCodec;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Hello {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(uint32, tag = "2")]
        count: u32,
    }

    type Replies = Pin<Box<dyn Stream<Item = Result<Hello, Status>> + Send>>;

    struct SayHello;
    impl tonic::server::UnaryService<Hello> for SayHello {
        type Response = Hello;
        type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse<Hello>, Status>> + Send>>;
        fn call(&mut self, req: GrpcRequest<Hello>) -> Self::Future {
            let te = req.metadata().get("te").map(|v| v.to_str().unwrap().to_string());
            let name = req.into_inner().name;
            Box::pin(async move {
                if name.is_empty() {
                    return Err(Status::invalid_argument("a name, please"));
                }
                Ok(GrpcResponse::new(Hello { name: format!("hello {name} te={te:?}"), count: 1 }))
            })
        }
    }

    /// Answers `count` greetings, then fails with ABORTED when asked for more than 3.
    struct Greetings;
    impl tonic::server::ServerStreamingService<Hello> for Greetings {
        type Response = Hello;
        type ResponseStream = Replies;
        type Future = Pin<Box<dyn Future<Output = Result<GrpcResponse<Replies>, Status>> + Send>>;
        fn call(&mut self, req: GrpcRequest<Hello>) -> Self::Future {
            let Hello { name, count } = req.into_inner();
            Box::pin(async move {
                let replies = futures_util::stream::iter(0..count.min(3)).then(move |i| {
                    let name = name.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(Hello { name: format!("{name} #{i}"), count: i })
                    }
                });
                let end = (count > 3).then(|| Err(Status::aborted("only 3")));
                let replies: Replies = Box::pin(replies.chain(futures_util::stream::iter(end)));
                Ok(GrpcResponse::new(replies))
            })
        }
    }

    /// A gRPC server speaking HTTP/2 in cleartext, as gRPC servers behind a proxy do.
    async fn server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Hello, Hello>::default());
                        let res = match req.uri().path() {
                            "/test.Greeter/SayHello" => grpc.unary(SayHello, req).await,
                            "/test.Greeter/Greetings" => grpc.server_streaming(Greetings, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, std::convert::Infallible>(res)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    async fn client(url: String) -> tonic::client::Grpc<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
        tonic::client::Grpc::new(channel)
    }

    async fn through_relais() -> (Relais, std::net::SocketAddr) {
        let origin = server().await;
        let proxy = relais(Conf::new().upstream("g", origin).with("protocol = \"h2c\"").route_all("g")).await;
        (proxy, origin)
    }

    #[tokio::test]
    async fn unary_calls_and_their_status_pass_through() {
        let (proxy, _origin) = through_relais().await;
        let mut grpc = client(proxy.url("")).await;
        for _ in 0..3 {
            grpc.ready().await.unwrap();
            let path = PathAndQuery::from_static("/test.Greeter/SayHello");
            let res = grpc
                .unary(GrpcRequest::new(Hello { name: "relais".into(), count: 0 }), path, ProstCodec::default())
                .await
                .expect("a unary call through relais");
            let cache = res.metadata().get("cache-status").expect("relais's Cache-Status").to_str().unwrap();
            assert!(cache.contains("fwd=method"), "a POST is never served from the cache: {cache}");
            let hello: Hello = res.into_inner();
            assert_eq!(hello.name, "hello relais te=Some(\"trailers\")");
        }
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/test.Greeter/SayHello");
        let err = grpc
            .unary::<Hello, Hello, _>(GrpcRequest::new(Hello::default()), path, ProstCodec::default())
            .await
            .expect_err("the server's error");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "a name, please");
        let m = proxy.admin("GET", "/metrics", "").await.text();
        assert_eq!(sample(&m, "relais_cache_hits_total"), 0);
    }

    #[tokio::test]
    async fn server_streaming_calls_keep_their_messages_and_trailers() {
        let (proxy, _origin) = through_relais().await;
        let mut grpc = client(proxy.url("")).await;
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/test.Greeter/Greetings");
        let res = grpc
            .server_streaming(GrpcRequest::new(Hello { name: "a".into(), count: 3 }), path, ProstCodec::default())
            .await
            .unwrap();
        let mut stream = res.into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.expect("messages, then OK in the trailers") {
            let m: Hello = m;
            got.push(m.name);
        }
        assert_eq!(got, ["a #0", "a #1", "a #2"]);

        // An error after some messages arrives in the trailers, which relais must forward.
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/test.Greeter/Greetings");
        let res = grpc
            .server_streaming::<Hello, Hello, _>(
                GrpcRequest::new(Hello { name: "b".into(), count: 5 }),
                path,
                ProstCodec::default(),
            )
            .await
            .unwrap();
        let mut stream = res.into_inner();
        let mut n = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("the stream ended OK: the trailers were lost"),
                Err(status) => break status,
            }
        };
        assert_eq!(n, 3);
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert_eq!(status.message(), "only 3");
    }
}

/// A DNS server the test controls: answers A queries for any name with
/// `addresses` at a TTL of 1 s, and other queries with no records.
struct Dns {
    addr: std::net::SocketAddr,
    addresses: std::sync::Arc<std::sync::Mutex<Vec<std::net::Ipv4Addr>>>,
    /// A queries answered with no address so far.
    answered_empty: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Dns {
    async fn start(first: &[std::net::Ipv4Addr]) -> Dns {
        use hickory_proto::op::{Message, MessageType};
        use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let addresses = std::sync::Arc::new(std::sync::Mutex::new(first.to_vec()));
        let answer = addresses.clone();
        let answered_empty: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let counted = answered_empty.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut reply = Message::new();
                reply.set_id(query.id()).set_message_type(MessageType::Response).set_recursion_available(true);
                reply.set_recursion_desired(query.recursion_desired());
                for q in query.queries() {
                    reply.add_query(q.clone());
                    if q.query_type() == RecordType::A {
                        for ip in answer.lock().unwrap().iter() {
                            reply.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(*ip))));
                        }
                    }
                }
                let empty = reply.answers().is_empty();
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
                if empty && query.queries().iter().any(|q| q.query_type() == RecordType::A) {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        Dns { addr, addresses, answered_empty }
    }

    fn answer(&self, ips: &[std::net::Ipv4Addr]) {
        *self.addresses.lock().unwrap() = ips.to_vec();
    }

    fn answered_empty(&self) -> usize {
        self.answered_empty.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Origins on 127.0.0.1 and 127.0.0.2 at the same port, answering with their name.
async fn two_origins_one_port() -> (Origin, Origin, u16) {
    for _ in 0..20 {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        let Ok(b) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await else { continue };
        let a = origin().text("/", "one").start_on(a).await;
        let b = origin().text("/", "two").start_on(b).await;
        return (a, b, port);
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// A server given by name follows its DNS answer: every address is a server,
/// and a changed answer is picked up once its TTL has passed.
#[tokio::test]
async fn dns_names_are_re_resolved_and_every_address_is_a_server() {
    let (one, two, port) = two_origins_one_port().await;
    let dns = Dns::start(&["127.0.0.1".parse().unwrap()]).await;
    let proxy = relais(pass_through(
        Conf::new()
            .upstream("o", format!("app.test:{port}"))
            .with(format!("resolver = [\"{}\"]\nresolve_interval = \"30s\"", dns.addr)),
    ))
    .await;
    let server = |ip: &str| format!("relais_upstream_server_up{{upstream=\"o\",server=\"app.test:{port}@{ip}\"}}");
    // Waits until the servers in metrics are exactly `ips`.
    let servers_become = |ips: &'static [&'static str]| {
        let proxy = &proxy;
        let server = &server;
        async move {
            for _ in 0..100 {
                let m = proxy.admin("GET", "/metrics", "").await.text();
                let listed = m.lines().filter(|l| l.starts_with("relais_upstream_server_up{")).count();
                if listed == ips.len() && ips.iter().all(|ip| m.contains(&server(ip))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("servers never became {ips:?}");
        }
    };

    servers_become(&["127.0.0.1"]).await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.text(), "one");
    }

    // The name moves: within its TTL (1 s) plus a lookup, requests follow it.
    dns.answer(&["127.0.0.2".parse().unwrap()]);
    servers_become(&["127.0.0.2"]).await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.text(), "two");
    }

    // Two addresses: two servers, balanced round-robin.
    dns.answer(&["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
    servers_become(&["127.0.0.1", "127.0.0.2"]).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(&proxy.url("/")).await.text());
    }
    assert_eq!(seen.iter().filter(|s| *s == "one").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "two").count(), 3, "{seen:?}");
    // The server that stayed kept its pooled connection.
    assert_eq!(two.connections(), 1);
    drop(one);

    // An empty answer (or a resolver outage) keeps the last addresses.
    dns.answer(&[]);
    until("a lookup answered with nothing", || async { dns.answered_empty() >= 1 }).await;
    servers_become(&["127.0.0.1", "127.0.0.2"]).await;
}

/// `slow_start`: a server back from a failure gets few requests at first,
/// and its whole share once the ramp is over.
#[tokio::test]
async fn a_server_back_from_failure_ramps_up_over_slow_start() {
    let a = origin().text("/", "a").start().await;
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b_listener.local_addr().unwrap();
    let b = origin().text("/", "b").start_on(b_listener).await;
    let proxy = relais(pass_through(
        Conf::new()
            .servers("o", &[a.addr, b_addr])
            .with("fail_timeout = \"1s\"\nslow_start = \"3s\"\nretry_on = [\"reset\"]"),
    ))
    .await;
    let share_of_b = |n: usize| {
        let url = proxy.url("/");
        async move {
            let mut b = 0;
            for _ in 0..n {
                let r = get(&url).await;
                assert_eq!(r.status, 200);
                b += usize::from(r.text() == "b");
            }
            b
        }
    };
    assert_eq!(share_of_b(10).await, 5, "round-robin before any failure");

    // b fails: the request that finds it dead goes to a, and b is out for fail_timeout.
    b.stop();
    drop(b);
    assert_eq!(share_of_b(4).await, 0);
    let b = origin().text("/", "b").start_on(tokio::net::TcpListener::bind(b_addr).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let early = share_of_b(20).await;
    assert!(early <= 5, "just back, b got {early} of 20");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(share_of_b(20).await, 10, "ramp over: its whole share");
    assert!(b.total_hits() >= 10);
}

/// `least_conn`: while one server holds slow requests, new ones go to the other.
#[tokio::test(start_paused = true)]
async fn least_conn_sends_new_requests_away_from_a_server_holding_slow_ones() {
    let slow = origin().late("/hold", Duration::from_secs(2), "held").text("/", "slow").start().await;
    let quick = origin().text("/", "quick").start().await;
    let proxy =
        relais(pass_through(Conf::new().servers("o", &[slow.addr, quick.addr]).with("balance = \"least_conn\""))).await;
    let held: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url("/hold");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    // Until the slow server holds some: the quick one answers its share at once.
    for _ in 0..100 {
        if slow.hits("/hold") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(get(&proxy.url("/next")).await.text());
    }
    assert!(answers.iter().all(|a| a == "quick"), "{answers:?}");
    for h in held {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

/// An origin that answers an HTTP/2 connection preface with garbage, or hangs
/// up: the client gets a 502, and relais goes on serving.
#[tokio::test]
async fn an_h2c_origin_that_speaks_garbage_is_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok((mut tcp, _)) = listener.accept().await {
            n += 1;
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            if n.is_multiple_of(2) {
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno").await;
            } else {
                let _ = tcp.write_all(&[0xff; 64]).await;
            }
        }
    });
    let proxy = relais(pass_through(Conf::new().upstream("o", addr).with("protocol = \"h2c\""))).await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.status, 502);
    }
    assert_eq!(proxy.admin("GET", "/stats", "").await.status, 200);
}

/// Request trailers reach an HTTP/2 origin, also when the body is read whole
/// first (`request_buffering`).
#[tokio::test]
async fn request_trailers_reach_an_h2_origin_through_request_buffering() {
    use http_body_util::BodyExt;
    let o = origin()
        .route("/", |req: Request<hyper::body::Incoming>| async move {
            let whole = req.into_body().collect().await.unwrap();
            let check = whole.trailers().and_then(|t| t.get("x-check")).map(|v| v.to_str().unwrap().to_string());
            let body = whole.to_bytes();
            text(200, &format!("{} bytes, x-check={check:?}", body.len()), &[])
        })
        .start()
        .await;
    for buffering in [false, true] {
        let proxy = relais(
            Conf::new()
                .upstream("o", o.addr)
                .with("protocol = \"h2c\"")
                .route_all("o")
                .with(format!("request_buffering = {buffering}")),
        )
        .await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-check", "sum-42".parse().unwrap());
        let frames = vec![
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![b'x'; 100_000]))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).map_err(|e| match e {}).boxed();
        let req = Request::post(proxy.url("/up")).header("te", "trailers").body(body).unwrap();
        let r = send_with(&h2_client(), req).await;
        assert_eq!(r.text(), "100000 bytes, x-check=Some(\"sum-42\")", "request_buffering = {buffering}");
    }
}

/// `hash_balance_factor`: a hot key spills from its busy server to the next
/// one on the ring; without it, every request of the key waits on one server.
#[tokio::test]
async fn bounded_load_hashing_spills_a_hot_key() {
    let hold = |name: &'static str| origin().late("/", Duration::from_millis(400), name);
    let (a, b) = (hold("a").start().await, hold("b").start().await);
    for factor in [0, 125] {
        let proxy = relais(pass_through(
            Conf::new()
                .servers("o", &[a.addr, b.addr])
                .with(format!("balance = \"hash\"\nhash_key = \"header:x-key\"\nhash_balance_factor = {factor}")),
        ))
        .await;
        let url = proxy.url("/hot");
        let answers = futures_util::future::join_all((0..6).map(|_| get_with(&url, &[("x-key", "k")]))).await;
        let mut names: Vec<String> = answers.iter().map(|r| r.text()).collect();
        names.sort();
        names.dedup();
        let want = if factor == 0 { 1 } else { 2 };
        assert_eq!(names.len(), want, "hash_balance_factor = {factor}: {names:?}");
    }
}

/// A burst to an HTTP/2 server that never finishes its TLS handshake: those
/// waiting for the connection being opened fail with it, all within about one
/// connect timeout, not one connect timeout each in turn.
#[tokio::test]
async fn a_burst_to_a_silent_h2_server_fails_together() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = relais(pass_through(
        Conf::new()
            .upstream("o", format!("https://{}", silent.local_addr().unwrap()))
            .with("protocol = \"h2c\"\nconnect_timeout = \"300ms\""),
    ))
    .await;
    let started = std::time::Instant::now();
    let url = proxy.url("/");
    let answers = futures_util::future::join_all((0..8).map(|_| get(&url))).await;
    assert!(answers.iter().all(|r| r.status == 502));
    // One at a time they would take 8 × 300 ms.
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

/// An origin that serves pages as `name` and fails its health check when `sick`.
fn checked_origin(name: &'static str, sick: bool) -> OriginBuilder {
    let status = if sick { 500 } else { 200 };
    origin().route("/healthz", move |_| async move { text(status, "", &[]) }).text("/", name)
}

/// A server that fails its first health check gets no client request, though
/// it would answer them: at start it is `unchecked` until its check says. A
/// pool none of whose servers passes still answers (they are tried anyway).
#[tokio::test]
async fn a_server_that_fails_its_first_health_check_gets_no_client_request() {
    let sick = checked_origin("sick", true).start().await;
    let good = checked_origin("good", false).start().await;
    let (sick2, sick3) = (checked_origin("sick", true).start().await, checked_origin("sick", true).start().await);
    let checked = "health = { path = \"/healthz\" }";
    let proxy = relais(
        Conf::new()
            .servers("o", &[sick.addr, good.addr])
            .with(checked)
            .servers("all_sick", &[sick2.addr, sick3.addr])
            .with(checked)
            .route_all("o")
            .with("cache = { bypass = true }")
            .route("/all-sick/", "all_sick")
            .with("cache = { bypass = true }"),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/page")).await.text(), "good");
    }
    assert_eq!(sick.hits("/page"), 0, "no client request reached the server that failed its check");
    let stats = proxy.admin("GET", "/stats", "").await.text();
    assert_eq!(stats.matches("\"state\":\"check_failed\"").count(), 3, "{stats}");
    assert_eq!(get(&proxy.url("/all-sick/x")).await.text(), "sick", "no server passes: tried anyway");
}

/// Origins on 127.0.0.1 (healthy) and 127.0.0.2 (failing its check) at one port.
async fn a_healthy_and_a_sick_origin_one_port() -> (Origin, Origin, u16) {
    for _ in 0..20 {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        let Ok(b) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await else { continue };
        return (checked_origin("one", false).start_on(a).await, checked_origin("two", true).start_on(b).await, port);
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// A name that resolves to a new address adds a server that is checked at
/// once and gets no client request before its check passes.
#[tokio::test]
async fn a_new_address_gets_no_client_request_before_its_first_check() {
    let (_one, two, port) = a_healthy_and_a_sick_origin_one_port().await;
    let dns = Dns::start(&["127.0.0.1".parse().unwrap()]).await;
    let proxy = relais(pass_through(
        Conf::new()
            .upstream("o", format!("app.test:{port}"))
            .with(format!("resolver = [\"{}\"]\nhealth = {{ path = \"/healthz\" }}", dns.addr)),
    ))
    .await;
    assert_eq!(get(&proxy.url("/")).await.text(), "one");
    dns.answer(&["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()]);
    let listed = format!("server=\"app.test:{port}@127.0.0.2\"");
    for _ in 0..100 {
        if proxy.admin("GET", "/metrics", "").await.text().contains(&listed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/")).await.text(), "one");
    }
    assert_eq!(two.hits("/"), 0, "the new server failed its first check: no client request");
    assert!(two.hits("/healthz") >= 1);
}
