//! Our `proto/inference.proto` against the protocol as Triton's own client library was generated from it
//! (tritonclient's `service_pb2` and `model_config_pb2`): one wrong field number, type or cardinality would
//! break clients silently, so every message, enum and method we declare is compared field by field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use prost_reflect::{Cardinality, Kind};
use runtime::serve::proto;
use serde_json::Value;

fn python() -> PathBuf {
    std::env::var_os("DLCV_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

fn theirs() -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/triton_descriptors.py");
    let o = Command::new(python()).arg(&script).output().expect("run the project's Python (scripts/setup.sh installs it)");
    assert!(o.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("the script prints JSON")
}

/// Fields of Triton's configuration we do not declare (a config.pbtxt using one is refused by name).
const OMITTED: &[(&str, &str)] = &[
    ("inference.ModelConfig", "batch_input"),
    ("inference.ModelConfig", "batch_output"),
    ("inference.ModelConfig", "optimization"),
    ("inference.ModelConfig", "sequence_batching"),
    ("inference.ModelConfig", "ensemble_scheduling"),
    ("inference.ModelConfig", "cc_model_filenames"),
    ("inference.ModelConfig", "model_warmup"),
    ("inference.ModelConfig", "model_operations"),
    ("inference.ModelConfig", "model_transaction_policy"),
    ("inference.ModelConfig", "model_repository_agents"),
    ("inference.ModelConfig", "response_cache"),
    ("inference.ModelConfig", "model_metrics"),
    ("inference.ModelInstanceGroup", "rate_limiter"),
    ("inference.ModelInstanceGroup", "secondary_devices"),
    ("inference.ModelDynamicBatching", "priority_queue_policy"),
];

fn kind_name(k: &Kind) -> (&'static str, String) {
    match k {
        Kind::Double => ("double", String::new()),
        Kind::Float => ("float", String::new()),
        Kind::Int32 => ("int32", String::new()),
        Kind::Int64 => ("int64", String::new()),
        Kind::Uint32 => ("uint32", String::new()),
        Kind::Uint64 => ("uint64", String::new()),
        Kind::Sint32 => ("sint32", String::new()),
        Kind::Sint64 => ("sint64", String::new()),
        Kind::Fixed32 => ("fixed32", String::new()),
        Kind::Fixed64 => ("fixed64", String::new()),
        Kind::Sfixed32 => ("sfixed32", String::new()),
        Kind::Sfixed64 => ("sfixed64", String::new()),
        Kind::Bool => ("bool", String::new()),
        Kind::String => ("string", String::new()),
        Kind::Bytes => ("bytes", String::new()),
        Kind::Message(m) => ("message", m.full_name().to_string()),
        Kind::Enum(e) => ("enum", e.full_name().to_string()),
    }
}

#[test]
fn every_message_enum_and_method_matches_tritons_own_descriptors() {
    let t = theirs();
    let pool = proto::pool();
    let mut problems: Vec<String> = vec![];
    let mut checked_fields = 0;
    for m in pool.all_messages() {
        let name = m.full_name().to_string();
        let Some(their) = t["messages"].get(&name) else {
            problems.push(format!("{name}: no such message in Triton's protocol"));
            continue;
        };
        let their_fields = their["fields"].as_object().expect("fields");
        for f in m.fields() {
            let Some(tf) = their_fields.get(f.name()) else {
                problems.push(format!("{name}.{}: no such field in Triton's protocol", f.name()));
                continue;
            };
            let (kind, type_name) = kind_name(&f.kind());
            let oneof = f.containing_oneof().map(|o| o.name().to_string()).unwrap_or_default();
            let ours = serde_json::json!({
                "number": f.number(),
                "type": kind,
                "type_name": type_name,
                "repeated": f.cardinality() == Cardinality::Repeated,
                "oneof": oneof,
            });
            if &ours != tf {
                problems.push(format!("{name}.{}: ours {ours}, Triton's {tf}", f.name()));
            }
            checked_fields += 1;
        }
        for their_name in their_fields.keys() {
            if m.get_field_by_name(their_name).is_none() && !OMITTED.contains(&(name.as_str(), their_name.as_str())) {
                problems.push(format!("{name}.{their_name}: Triton has this field and we do not declare it"));
            }
        }
    }
    for e in pool.all_enums() {
        let name = e.full_name().to_string();
        let ours: BTreeMap<String, i64> = e.values().map(|v| (v.name().to_string(), i64::from(v.number()))).collect();
        let their: BTreeMap<String, i64> = match t["enums"].get(&name).and_then(Value::as_object) {
            Some(o) => o.iter().map(|(k, v)| (k.clone(), v.as_i64().expect("enum numbers"))).collect(),
            None => {
                problems.push(format!("enum {name}: not in Triton's protocol"));
                continue;
            }
        };
        if ours != their {
            problems.push(format!("enum {name}: ours {ours:?}, Triton's {their:?}"));
        }
    }
    let mut methods = 0;
    for s in pool.services() {
        for m in s.methods() {
            let key = format!("{}.{}", s.full_name(), m.name());
            let ours = serde_json::json!([m.input().full_name(), m.output().full_name()]);
            match t["methods"].get(&key) {
                Some(their) if their == &ours => methods += 1,
                Some(their) => problems.push(format!("rpc {key}: ours {ours}, Triton's {their}")),
                None => problems.push(format!("rpc {key}: not in Triton's GRPCInferenceService")),
            }
        }
    }
    assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
    // the eight RPCs of the issue, and every field of their messages
    assert_eq!(methods, 8);
    assert!(checked_fields > 120, "only {checked_fields} fields compared");
}
