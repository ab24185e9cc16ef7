//! Per model version: a bounded queue of requests and `instance_group` workers, each a thread owning its
//! own ONNX Runtime session. With `dynamic_batching`, Triton's semantics: a worker takes the oldest
//! request and merges the ones behind it (same trailing shapes) into one batch of at most
//! `max_batch_size` rows, waiting up to `max_queue_delay_microseconds` from the oldest request's arrival
//! for the batch to fill (to `max_batch_size`, or the largest `preferred_batch_size`); without it, each
//! request runs alone. Statistics follow Triton's statistics extension.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ort::session::Session;
use ort::value::DynValue;

use super::tensor::Tensor;
use super::{telemetry, ApiError};

/// How requests are scheduled.
#[derive(Debug, Clone)]
pub struct Policy {
    /// 0: no batching (each request's tensors are complete).
    pub max_batch: usize,
    /// Whether requests are merged (`dynamic_batching` in the config).
    pub dynamic: bool,
    pub delay: Duration,
    pub preferred: Vec<usize>,
    /// Requests that may wait; one more is refused (503).
    pub max_queue: usize,
}

impl Policy {
    /// Rows at which a batch runs at once, without waiting for the delay.
    fn target(&self) -> usize {
        self.preferred.iter().copied().max().unwrap_or(self.max_batch).max(1)
    }
}

/// Count and total nanoseconds, as the statistics extension reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Duration2 {
    pub count: u64,
    pub ns: u64,
}

impl Duration2 {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns += d.as_nanos() as u64;
    }
}

/// Per batch size: compute input, infer, output.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchStats {
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
}

/// Triton's per-model statistics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Milliseconds since the epoch of the last inference (0: none yet).
    pub last_inference: u64,
    /// Rows inferred (a batch of 4 counts 4).
    pub inference_count: u64,
    /// Model executions (batches).
    pub execution_count: u64,
    pub success: Duration2,
    pub fail: Duration2,
    pub queue: Duration2,
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
    pub batches: BTreeMap<u64, BatchStats>,
}

/// One request in the queue.
pub struct Job {
    /// In the model's input order.
    pub inputs: Vec<Tensor>,
    /// Rows (the batch dimension; 1 when the model does not batch).
    pub rows: usize,
    pub enqueued: Instant,
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<Tensor>, ApiError>>,
}

impl Job {
    fn merges_with(&self, other: &Job) -> bool {
        self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.shape[1..] == b.shape[1..])
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    model: String,
    version: String,
    policy: Policy,
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: Mutex<Stats>,
}

/// The queue and workers of one model version.
pub struct Scheduler {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Scheduler {
    /// Starts one worker per session.
    pub fn start(model: &str, version: u64, sessions: Vec<Session>, input_names: Vec<String>, output_names: Vec<String>, policy: Policy) -> Self {
        let shared = Arc::new(Shared {
            model: model.to_string(),
            version: version.to_string(),
            policy,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closed: false }),
            wake: Condvar::new(),
            stats: Mutex::new(Stats::default()),
        });
        let workers = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let (shared, ins, outs) = (shared.clone(), input_names.clone(), output_names.clone());
                std::thread::Builder::new()
                    .name(format!("{model}-{version}-{i}"))
                    .spawn(move || worker(&shared, session, &ins, &outs))
                    .expect("spawn a model worker thread")
            })
            .collect();
        Self { shared, workers: Mutex::new(workers) }
    }

    pub fn instances(&self) -> usize {
        lock(&self.workers).len()
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Queues a request; a full queue or a closed scheduler refuses it.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(ApiError::Unavailable("the server is shutting down".into()));
        }
        if q.jobs.len() >= self.shared.policy.max_queue {
            return Err(ApiError::Unavailable(format!(
                "model '{}' has {} requests waiting, its queue limit: try again later",
                self.shared.model, self.shared.policy.max_queue
            )));
        }
        q.jobs.push_back(job);
        telemetry::pending(&self.shared.model, &self.shared.version, q.jobs.len());
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Records a request's end (its whole duration, from arrival to answer).
    pub fn record_request(&self, ok: bool, d: Duration) {
        let mut s = lock(&self.shared.stats);
        if ok {
            s.success.add(d);
        } else {
            s.fail.add(d);
        }
        drop(s);
        telemetry::request(&self.shared.model, &self.shared.version, ok, d);
    }

    /// Lets the workers finish what is queued, then stops them and waits for them.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_all();
        for w in lock(&self.workers).drain(..) {
            let _ = w.join();
        }
    }
}

/// Waits for work, then takes the next batch (empty: closed and drained).
fn next_batch(shared: &Shared) -> Vec<Job> {
    let p = &shared.policy;
    let mut q = lock(&shared.queue);
    loop {
        let Some(first) = q.jobs.front() else {
            if q.closed {
                return vec![];
            }
            q = shared.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        };
        if !p.dynamic {
            return q.jobs.pop_front().into_iter().collect();
        }
        // the requests behind the oldest that fit in one batch with it
        let (mut take, mut rows) = (1, first.rows);
        for j in q.jobs.iter().skip(1) {
            if rows + j.rows > p.max_batch || !j.merges_with(first) {
                break;
            }
            take += 1;
            rows += j.rows;
        }
        let blocked = take < q.jobs.len(); // the next request cannot join this batch: waiting gains nothing
        let deadline = first.enqueued + p.delay;
        let now = Instant::now();
        if rows >= p.target() || blocked || now >= deadline || q.closed {
            let batch: Vec<Job> = q.jobs.drain(..take).collect();
            telemetry::pending(&shared.model, &shared.version, q.jobs.len());
            if !q.jobs.is_empty() {
                shared.wake.notify_one();
            }
            return batch;
        }
        q = shared.wake.wait_timeout(q, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
    }
}

fn worker(shared: &Shared, mut session: Session, input_names: &[String], output_names: &[String]) {
    loop {
        let batch = next_batch(shared);
        if batch.is_empty() {
            return;
        }
        run_batch(shared, &mut session, input_names, output_names, batch);
    }
}

fn run_batch(shared: &Shared, session: &mut Session, input_names: &[String], output_names: &[String], batch: Vec<Job>) {
    let start = Instant::now();
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let queued: Vec<Duration> = batch.iter().map(|j| start - j.enqueued).collect();
    let result = (|| -> Result<(Vec<Vec<Tensor>>, [Duration; 3]), String> {
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(input_names.len());
        for (i, name) in input_names.iter().enumerate() {
            let parts: Vec<&Tensor> = batch.iter().map(|j| &j.inputs[i]).collect();
            let merged = if parts.len() == 1 { parts[0].to_ort()? } else { Tensor::concat(&parts).to_ort()? };
            values.push((name.clone(), merged));
        }
        let t_in = Instant::now();
        let outputs = session.run(values).map_err(|e| format!("inference failed: {e}"))?;
        let t_run = Instant::now();
        let mut per_job: Vec<Vec<Tensor>> = batch.iter().map(|_| Vec::with_capacity(output_names.len())).collect();
        for name in output_names {
            let value = outputs.get(name.as_str()).ok_or_else(|| format!("the model gave no output '{name}'"))?;
            let t = Tensor::from_ort(name, value)?;
            if shared.policy.max_batch == 0 {
                per_job[0].push(t);
                continue;
            }
            if t.shape.first() != Some(&rows) {
                return Err(format!("output '{name}' has shape {:?} for a batch of {rows}", t.shape));
            }
            let mut at = 0;
            for (j, job) in batch.iter().enumerate() {
                per_job[j].push(t.rows(at..at + job.rows));
                at += job.rows;
            }
        }
        let t_out = Instant::now();
        Ok((per_job, [t_in - start, t_run - t_in, t_out - t_run]))
    })();
    match result {
        Ok((per_job, [d_in, d_run, d_out])) => {
            let mut s = lock(&shared.stats);
            s.last_inference = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            s.inference_count += rows as u64;
            s.execution_count += 1;
            for q in &queued {
                s.queue.add(*q);
                s.compute_input.add(d_in);
                s.compute_infer.add(d_run);
                s.compute_output.add(d_out);
            }
            let b = s.batches.entry(rows as u64).or_default();
            b.compute_input.add(d_in);
            b.compute_infer.add(d_run);
            b.compute_output.add(d_out);
            drop(s);
            telemetry::batch(&shared.model, &shared.version, rows, &queued, [d_in, d_run, d_out]);
            for (job, outs) in batch.into_iter().zip(per_job) {
                let _ = job.reply.send(Ok(outs));
            }
        }
        Err(e) => {
            tracing::error!("model '{}' version {}: {e}", shared.model, shared.version);
            for job in batch {
                let _ = job.reply.send(Err(ApiError::Internal(format!("model '{}': {e}", shared.model))));
            }
        }
    }
}
