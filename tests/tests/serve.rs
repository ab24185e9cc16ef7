//! `runtime serve` over a repository written by `exporter triton`, with the clients people use:
//! tritonclient (HTTP and gRPC) against onnxruntime and `runtime predict`; bad requests over raw HTTP,
//! each a 4xx naming what is wrong with the server still answering; a bounded load at concurrency 16
//! that must form batches; SIGTERM with requests in flight; and Triton's load-time rules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::{bin, pattern_image, python, run_bin, s, text, PATTERNS};

const MODEL: &str = "patterns";
/// mini-vgg's input for three channels: [3, 28, 28] floats.
const SAMPLE_BYTES: usize = 3 * 28 * 28 * 4;

/// An untrained 3-class mini-vgg ONNX file and a repository for it written by `exporter triton`.
fn repository(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let onnx = dir.join("patterns.onnx");
    tests::untrained_onnx("mini-vgg", &PATTERNS, 3, &onnx);
    let repo = dir.join("repo");
    let mut args = vec!["triton", "--model", s(&onnx), "--repository", s(&repo), "--name", MODEL];
    args.extend_from_slice(extra);
    let o = run_bin("exporter", &args);
    assert!(o.status.success(), "{}", text(&o));
    (onnx, repo)
}

/// A running `runtime serve`, killed if a test fails before stopping it.
struct Served {
    child: Child,
    http: String,
    grpc: String,
    metrics: String,
}

impl Served {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(bin("runtime"))
            .args(["-q", "serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runtime serve");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut http, mut grpc, mut metrics) = (String::new(), String::new(), String::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        while http.is_empty() || grpc.is_empty() || metrics.is_empty() {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                    panic!("runtime serve did not print its addresses: {err}");
                }
            };
            for (what, slot) in [("HTTP", &mut http), ("gRPC", &mut grpc), ("metrics", &mut metrics)] {
                if let Some(addr) = line.strip_prefix(&format!("{what} listening on ")) {
                    *slot = addr.to_string();
                }
            }
        }
        Self { child, http, grpc, metrics }
    }

    /// SIGTERM, then the exit status (within 60 s).
    fn terminate(&mut self) -> ExitStatus {
        let o = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).output().expect("kill");
        assert!(o.status.success(), "{}", text(&o));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "runtime serve did not exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 response.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A keep-alive HTTP/1.1 connection written by hand, so that requests can be as broken as a test needs
/// (lying lengths, truncated bodies).
struct Conn {
    stream: BufReader<TcpStream>,
    addr: String,
}

impl Conn {
    fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream: BufReader::new(stream), addr: addr.to_string() }
    }

    /// Sends a request; `Content-Length` is the body's unless `headers` give one.
    fn send(&mut self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(req.as_bytes()).unwrap();
        // a server may answer (413) and close before reading all of an oversize body: read the answer anyway
        let _ = s.write_all(body);
        self.read_reply()
    }

    fn read_reply(&mut self) -> Reply {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("status line");
        let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = vec![];
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).expect("header line");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header");
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).expect("body");
        Reply { status, headers, body }
    }
}

fn get(addr: &str, path: &str) -> Reply {
    Conn::open(addr).send("GET", path, &[], b"")
}

/// A binary-tensor infer request (Triton's extension) for `rows` samples of `x`.
fn binary_request(input: &str, rows: usize, x: &[f32]) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let head = serde_json::json!({
        "inputs": [{"name": input, "shape": [rows, 3, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": x.len() * 4}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    x.iter().for_each(|v| body.extend_from_slice(&v.to_le_bytes()));
    (vec![("Inference-Header-Content-Length", head.len().to_string())], body)
}

fn input_name(http: &str) -> String {
    get(http, &format!("/v2/models/{MODEL}")).json()["inputs"][0]["name"].as_str().expect("input name").to_string()
}

#[test]
fn tritonclient_over_http_and_grpc_matches_onnxruntime_and_runtime_predict() {
    let scratch = tests::fresh_dir("serve-client");
    let dir = scratch.path();
    let (onnx, repo) = repository(dir, &["--max-batch", "8", "--instances", "2", "--queue-delay-us", "500"]);
    // photos in: two PNGs and a JPEG of the pattern classes
    let mut images = vec![];
    for (i, ext) in ["png", "jpg", "png"].iter().enumerate() {
        let p = dir.join(format!("img{i}.{ext}"));
        pattern_image(i, 40, 100 + i as u64).save(&p).unwrap();
        images.push(p);
    }
    let mut args = vec!["predict", "--model", s(&onnx), "--top", "3", "--json"];
    args.extend(images.iter().map(|p| s(p)));
    let o = run_bin("runtime", &args);
    assert!(o.status.success(), "{}", text(&o));
    let predicted = dir.join("predict.jsonl");
    std::fs::write(&predicted, &o.stdout).unwrap();

    let mut served = Served::start(&["--model-repository", s(&repo)]);
    let script = tests::repo_root().join("tests/python/serve_client.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script).args([&served.http, &served.grpc, MODEL, s(&onnx), s(&predicted)]).args(&images);
    let o = cmd.output().expect("run the tritonclient script");
    assert!(o.status.success(), "{}", text(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    eprintln!("tritonclient summary: {summary}");
    for k in ["http_binary", "http_json", "grpc"] {
        assert!(summary["tensor_max_abs_diff"][k].as_f64().unwrap() <= 1e-6, "{summary}");
    }
    assert_eq!(summary["images"]["count"], 3);

    // the config REST gives is Triton's JSON form of what exporter wrote
    let cfg = get(&served.http, &format!("/v2/models/{MODEL}/config")).json();
    assert_eq!(cfg["max_batch_size"], 8, "{cfg}");
    assert_eq!(cfg["instance_group"][0]["count"], 2, "{cfg}");
    assert_eq!(cfg["dynamic_batching"]["max_queue_delay_microseconds"], 500, "{cfg}");
    // health endpoints: status only, empty body
    let live = get(&served.http, "/v2/health/live");
    assert_eq!((live.status, live.body.len()), (200, 0));
    assert!(served.terminate().success());
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving() {
    let scratch = tests::fresh_dir("serve-bad");
    let (_, repo) = repository(scratch.path(), &["--max-batch", "8"]);
    let served = Served::start(&["--model-repository", s(&repo), "--max-body-mib", "1"]);
    let http = served.http.clone();
    let input = input_name(&http);
    let infer = format!("/v2/models/{MODEL}/infer");
    let one = vec![0.5f32; SAMPLE_BYTES / 4];
    let json_req = |shape: serde_json::Value, datatype: &str, data: serde_json::Value| {
        serde_json::json!({"inputs": [{"name": input, "shape": shape, "datatype": datatype, "data": data}]}).to_string().into_bytes()
    };
    let binary_head = |shape: serde_json::Value, datatype: &str, size: usize| {
        serde_json::json!({"inputs": [{"name": input, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}]}).to_string()
    };
    let with_binary = |head: String, data: &[u8]| {
        let mut b = head.clone().into_bytes();
        b.extend_from_slice(data);
        (vec![("Inference-Header-Content-Length", head.len().to_string())], b)
    };
    let floats: Vec<u8> = one.iter().flat_map(|v| v.to_le_bytes()).collect();

    type Case = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);
    let mut cases: Vec<Case> = vec![
        ("malformed JSON", infer.clone(), vec![], b"{\"inputs\": [".to_vec(), 400, "malformed request JSON"),
        ("wrong shape", infer.clone(), vec![], json_req(serde_json::json!([1, 3, 28]), "FP32", serde_json::json!(vec![0.0; 84])), 400, "expects [-1, 3, 28, 28]"),
        ("wrong datatype", infer.clone(), vec![], json_req(serde_json::json!([1, 3, 28, 28]), "FP64", serde_json::json!(vec![0.0; 2352])), 400, "datatype FP64"),
        ("data length ≠ shape", infer.clone(), vec![], json_req(serde_json::json!([1, 3, 28, 28]), "FP32", serde_json::json!([1, 2, 3, 4, 5])), 400, "5 elements of data"),
        ("unknown model", "/v2/models/nope/infer".into(), vec![], json_req(serde_json::json!([1]), "FP32", serde_json::json!([1])), 404, "unknown model 'nope'"),
        ("unknown version", format!("/v2/models/{MODEL}/versions/7/infer"), vec![], json_req(serde_json::json!([1]), "FP32", serde_json::json!([1])), 404, "unknown version 7"),
        ("oversize body", infer.clone(), vec![], vec![b' '; 2 << 20], 413, "limit of 1048576 bytes"),
        ("compressed body", infer.clone(), vec![("Content-Encoding", "gzip".into())], b"{}".to_vec(), 415, "Content-Encoding gzip"),
        ("batch above max_batch_size", infer.clone(), vec![], json_req(serde_json::json!([9, 3, 28, 28]), "FP32", serde_json::json!(vec![0.0; 9 * 2352])), 400, "max_batch_size 8"),
        ("unknown output", infer.clone(), vec![], serde_json::json!({"inputs": [{"name": input, "shape": [1, 3, 28, 28], "datatype": "FP32", "data": vec![0.0; 2352]}], "outputs": [{"name": "logits"}]}).to_string().into_bytes(), 400, "unknown output 'logits'"),
        ("path-like model name", "/v2/models/..%2F..%2Fetc%2Fpasswd/config".into(), vec![], vec![], 404, "unknown model '../../etc/passwd'"),
        ("no such endpoint", "/v2/repository/index".into(), vec![], vec![], 404, "no such endpoint"),
    ];
    let (h, b) = with_binary(binary_head(serde_json::json!([1, 3, 28, 28]), "FP32", SAMPLE_BYTES), &floats[..SAMPLE_BYTES / 2]);
    cases.push(("truncated binary body", infer.clone(), h, b, 400, "runs past the end of the body"));
    let (_, b) = with_binary(binary_head(serde_json::json!([1, 3, 28, 28]), "FP32", SAMPLE_BYTES), &floats);
    cases.push(("header length that lies", infer.clone(), vec![("Inference-Header-Content-Length", (b.len() + 10).to_string())], b, 400, "has only"));
    let (h, b) = with_binary(binary_head(serde_json::json!([1, 3, 28, 28]), "FP32", 16), &floats[..16]);
    cases.push(("binary_data_size that lies about the shape", infer.clone(), h, b, 400, "needs 9408 bytes"));
    let mut lying_bytes = 1000u32.to_le_bytes().to_vec();
    lying_bytes.extend_from_slice(b"\x89PNG");
    let (h, b) = with_binary(binary_head(serde_json::json!([1]), "BYTES", lying_bytes.len()), &lying_bytes);
    cases.push(("BYTES element past the end", infer.clone(), h, b, 400, "says 1000 bytes"));
    let (h, b) = with_binary(binary_head(serde_json::json!([4294967296i64, 4294967296i64, 16]), "FP32", 0), &[]);
    cases.push(("shape product overflows", infer.clone(), h, b, 400, "more elements than can be addressed"));
    let (h, b) = with_binary(binary_head(serde_json::json!([100000, 3, 28, 28]), "FP32", 16), &floats[..16]);
    cases.push(("shape asking for gigabytes", infer.clone(), h, b, 400, "needs 940800000 bytes"));
    let mut not_image = 12u32.to_le_bytes().to_vec();
    not_image.extend_from_slice(b"not an image");
    let (h, b) = with_binary(binary_head(serde_json::json!([1]), "BYTES", not_image.len()), &not_image);
    cases.push(("undecodable image", infer.clone(), h, b, 400, "element 0 is not a usable image"));

    let n_cases = cases.len();
    for (what, path, headers, body, status, needle) in cases {
        let r = Conn::open(&http).send(if body.is_empty() { "GET" } else { "POST" }, &path, &headers, &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message: {}", r.text())).to_string();
        assert!(msg.contains(needle), "{what}: {msg:?} should say {needle:?}");
        // the server still answers, and still infers
        assert_eq!(get(&http, "/v2/health/ready").status, 200, "{what}: not ready afterwards");
    }
    let (h, b) = binary_request(&input, 1, &one);
    let ok = Conn::open(&http).send("POST", &infer, &h, &b);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let json_len: usize = ok.header("Inference-Header-Content-Length").expect("binary reply").parse().unwrap();
    assert_eq!(ok.body.len() - json_len, 3 * 4, "three FP32 probabilities after the JSON");
    // failures are counted in the model's statistics: every bad request but the four that name no
    // loaded model (unknown model, unknown version, path-like name, no such endpoint)
    let stats = get(&http, &format!("/v2/models/{MODEL}/stats")).json();
    let s = &stats["model_stats"][0]["inference_stats"];
    assert_eq!(s["fail"]["count"].as_u64(), Some(n_cases as u64 - 4), "{stats}");
    assert_eq!(s["success"]["count"].as_u64(), Some(1), "{stats}");
}

#[test]
fn load_at_concurrency_16_forms_batches_with_zero_errors_and_metrics_count_it() {
    let scratch = tests::fresh_dir("serve-load");
    let (_, repo) = repository(scratch.path(), &["--max-batch", "8", "--instances", "2", "--queue-delay-us", "2000"]);
    let served = Served::start(&["--model-repository", s(&repo)]);
    let input = input_name(&served.http);
    let infer = format!("/v2/models/{MODEL}/infer");
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 25;
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, input, infer) = (served.http.clone(), input.clone(), infer.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr); // keep-alive: one connection per client
                let x = data::rng::Xorshift64::seeded(c as u64 + 1).uniform(SAMPLE_BYTES / 4, -2.0, 2.0);
                let mut errors = vec![];
                for _ in 0..PER_CLIENT {
                    let (h, b) = binary_request(&input, 1, &x);
                    let r = conn.send("POST", &infer, &h, &b);
                    if r.status != 200 {
                        errors.push(format!("{}: {}", r.status, r.text()));
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = workers.into_iter().flat_map(|w| w.join().expect("client thread")).collect();
    let elapsed = started.elapsed();
    assert!(errors.is_empty(), "{} errors, first: {}", errors.len(), errors[0]);
    let total = CLIENTS * PER_CLIENT;
    eprintln!("{total} requests at concurrency {CLIENTS} in {:.2} s ({:.0} requests/s)", elapsed.as_secs_f64(), total as f64 / elapsed.as_secs_f64());

    let stats = get(&served.http, &format!("/v2/models/{MODEL}/stats")).json();
    let m = &stats["model_stats"][0];
    assert_eq!(m["inference_stats"]["success"]["count"].as_u64(), Some(total as u64), "{stats}");
    assert_eq!(m["inference_count"].as_u64(), Some(total as u64), "{stats}");
    let sizes: Vec<u64> = m["batch_stats"].as_array().unwrap().iter().map(|b| b["batch_size"].as_u64().unwrap()).collect();
    let executions = m["execution_count"].as_u64().unwrap();
    eprintln!("batch sizes formed: {sizes:?}, {executions} executions for {total} requests");
    assert!(sizes.iter().any(|&b| b > 1), "no batch larger than 1 was formed: {sizes:?}");
    assert!(executions < total as u64, "{executions} executions for {total} requests");
    assert!(sizes.iter().all(|&b| b <= 8), "a batch above max_batch_size: {sizes:?}");

    let metrics = get(&served.metrics, "/metrics").text();
    let success = metrics
        .lines()
        .find(|l| l.starts_with("dlcv_inference_request_success_total{") && l.contains(&format!("model=\"{MODEL}\"")))
        .unwrap_or_else(|| panic!("no success counter in:\n{metrics}"));
    assert_eq!(success.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize, total, "{success}");
    for name in [
        "dlcv_inference_batch_size_bucket",
        "dlcv_inference_queue_duration_seconds_bucket",
        "dlcv_inference_compute_infer_duration_seconds_bucket",
        "dlcv_inference_pending_request_count",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
}

#[test]
fn sigterm_answers_the_requests_in_flight_then_exits_cleanly() {
    let scratch = tests::fresh_dir("serve-term");
    // a long queue delay keeps the requests waiting in the queue when the signal comes
    let (_, repo) = repository(scratch.path(), &["--max-batch", "8", "--queue-delay-us", "700000"]);
    let mut served = Served::start(&["--model-repository", s(&repo)]);
    let input = input_name(&served.http);
    let infer = format!("/v2/models/{MODEL}/infer");
    let clients: Vec<_> = (0..5)
        .map(|c| {
            let (addr, input, infer) = (served.http.clone(), input.clone(), infer.clone());
            std::thread::spawn(move || {
                let x = vec![c as f32 * 0.1; SAMPLE_BYTES / 4];
                let (h, b) = binary_request(&input, 1, &x);
                let r = Conn::open(&addr).send("POST", &infer, &h, &b);
                (r.status, r.text())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(250));
    let pending = Instant::now();
    let status = served.terminate();
    for c in clients {
        let (code, body) = c.join().unwrap();
        assert_eq!(code, 200, "a request in flight at SIGTERM was not answered: {body}");
    }
    assert!(status.success(), "runtime serve exited with {status} after SIGTERM");
    eprintln!("exited {:.0} ms after SIGTERM", pending.elapsed().as_secs_f64() * 1e3);
    assert!(TcpStream::connect(&served.http).is_err(), "still accepting connections after exit");
}

#[test]
fn triton_load_time_rules_refuse_a_config_that_does_not_fit_its_model() {
    let scratch = tests::fresh_dir("serve-rules");
    let (onnx, _) = repository(scratch.path(), &[]);
    let good_io =
        "input [ { name: \"INPUT\" data_type: TYPE_FP32 dims: [ 3, 28, 28 ] } ]\noutput [ { name: \"probabilities\" data_type: TYPE_FP32 dims: [ 3 ] } ]\n";
    let input = {
        let served = Served::start(&["--model", &format!("{MODEL}={}", s(&onnx))]);
        input_name(&served.http)
    };
    let good_io = good_io.replace("INPUT", &input);
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("name differs from the folder", format!("name: \"other\"\nmax_batch_size: 8\n{good_io}"), None, "name: \"other\" but the folder is 'patterns'"),
        ("dims do not match", format!("max_batch_size: 8\n{}", good_io.replace("[ 3, 28, 28 ]", "[ 3, 28, 27 ]")), None, "dims [3, 28, 27] do not match"),
        (
            "data type differs",
            format!("max_batch_size: 8\n{}", good_io.replacen("TYPE_FP32", "TYPE_FP64", 1)),
            None,
            "TYPE_FP64 but the ONNX file has TYPE_FP32",
        ),
        (
            "unknown input",
            format!("max_batch_size: 8\n{}", good_io.replace(&format!("\"{input}\""), "\"image\"")),
            None,
            "input 'image' is not in the ONNX file",
        ),
        (
            "preferred size above max",
            format!("max_batch_size: 4\n{good_io}dynamic_batching {{ preferred_batch_size: [ 8 ] }}\n"),
            None,
            "preferred_batch_size 8",
        ),
        (
            "labels count",
            format!("max_batch_size: 8\n{}", good_io.replace("dims: [ 3 ] }", "dims: [ 3 ] label_filename: \"labels.txt\" }")),
            Some("a\nb\n"),
            "3 classes but its labels list 2",
        ),
        ("no batch dim in full dims", format!("max_batch_size: 0\n{good_io}"), None, "dims [3, 28, 28] do not match the ONNX file's [-1, 3, 28, 28]"),
        ("unknown field, with its line", format!("max_batch_size: 8\n{good_io}optimisation {{ }}\n"), None, "config.pbtxt:4:1"),
        ("another platform", format!("platform: \"tensorrt_plan\"\n{good_io}"), None, "only \"onnxruntime_onnx\""),
    ];
    for (what, config, labels, needle) in cases {
        let repo = scratch.path().join(format!("bad-{}", what.replace(' ', "-")));
        let folder = repo.join(MODEL);
        std::fs::create_dir_all(folder.join("1")).unwrap();
        std::fs::copy(&onnx, folder.join("1/model.onnx")).unwrap();
        std::fs::write(folder.join("config.pbtxt"), &config).unwrap();
        if let Some(l) = labels {
            std::fs::write(folder.join("labels.txt"), l).unwrap();
        }
        let o = run_bin("runtime", &["-q", "serve", "--model-repository", s(&repo), "--http", "127.0.0.1:0", "--grpc", "off", "--metrics", "off"]);
        assert!(!o.status.success(), "{what}: loaded anyway");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{what}: {err:?} should say {needle:?}");
    }
}

#[test]
fn a_full_queue_gets_503_a_slow_request_408_and_a_silent_client_is_cut_off() {
    let scratch = tests::fresh_dir("serve-limits");
    // requests wait 0.7 s for a batch to fill: longer than the request timeout
    let (_, repo) = repository(scratch.path(), &["--max-batch", "8", "--queue-delay-us", "700000"]);
    let served = Served::start(&["--model-repository", s(&repo), "--max-queue", "2", "--request-timeout", "0.4", "--header-timeout", "0.5"]);
    let input = input_name(&served.http);
    let infer = format!("/v2/models/{MODEL}/infer");
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (addr, input, infer) = (served.http.clone(), input.clone(), infer.clone());
            std::thread::spawn(move || {
                let (h, b) = binary_request(&input, 1, &vec![0.25; SAMPLE_BYTES / 4]);
                let r = Conn::open(&addr).send("POST", &infer, &h, &b);
                (r.status, r.text())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let (h, b) = binary_request(&input, 1, &vec![0.25; SAMPLE_BYTES / 4]);
    let full = Conn::open(&served.http).send("POST", &infer, &h, &b);
    assert_eq!(full.status, 503, "{}", full.text());
    assert!(full.json()["error"].as_str().unwrap().contains("queue limit"), "{}", full.text());
    for w in waiting {
        let (code, body) = w.join().unwrap();
        assert_eq!(code, 408, "a request past --request-timeout: {body}");
        assert!(body.contains("request timeout"), "{body}");
    }
    // a client that sends half a request line and then nothing is disconnected after --header-timeout
    let mut slow = TcpStream::connect(&served.http).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x").unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(5), "the silent connection was held {waited:?}");
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // and the server still serves
    assert_eq!(get(&served.http, "/v2/health/ready").status, 200);
}
