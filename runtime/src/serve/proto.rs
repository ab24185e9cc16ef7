//! The protocol's messages (generated at build time from `proto/inference.proto`) and what the descriptors
//! give besides: `config.pbtxt` parsed as protobuf text format, and `ModelConfig` written as JSON for REST.

use std::path::Path;
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// The generated messages and gRPC service of package `inference`.
#[allow(clippy::all, clippy::pedantic, clippy::wildcard_enum_match_arm, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

/// The encoded `FileDescriptorSet` of `proto/inference.proto`.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference.bin"));

/// The descriptors of package `inference`, decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTOR_SET).expect("the build script wrote a valid descriptor set"))
}

fn model_config_descriptor() -> prost_reflect::MessageDescriptor {
    pool().get_message_by_name("inference.ModelConfig").expect("inference.ModelConfig is declared in proto/inference.proto")
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses a Triton `config.pbtxt` (protobuf text format of `inference.ModelConfig`); an error names the
/// file, line and column, and what is wrong there (an unknown field, a bad enum value, a type clash).
pub fn parse_config(text: &str, path: &Path) -> Result<pb::ModelConfig, String> {
    let text = &colon_before_lists(text);
    let dynamic = DynamicMessage::parse_text_format(model_config_descriptor(), text).map_err(|e| {
        use miette::Diagnostic;
        let at = e.labels().and_then(|mut l| l.next()).map(|l| line_col(text, l.offset()));
        match at {
            Some((line, col)) => format!("{}:{line}:{col}: {e}", path.display()),
            None => format!("{}: {e}", path.display()),
        }
    })?;
    dynamic.transcode_to::<pb::ModelConfig>().map_err(|e| format!("{}: {e}", path.display()))
}

/// The text format lets a message field's colon go before a list (`input [ { … } ]`, as nearly every
/// Triton config writes it), but prost-reflect 0.16 requires it (`input: [ … ]`). This puts it in:
/// a field name followed (after spaces or comments) by `[` gets a `:`, written over the space when there
/// is one, so line and column numbers in errors stay those of the file. Strings and comments are skipped.
fn colon_before_lists(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                out.extend_from_slice(&b[start..i]);
            }
            b'#' => {
                let start = i;
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                out.extend_from_slice(&b[start..i]);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.extend_from_slice(&b[start..i]);
                let mut j = i;
                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                    j += 1;
                }
                if j < b.len() && b[j] == b'[' {
                    if j > i {
                        out.push(b':');
                        out.extend_from_slice(&b[i + 1..j]);
                    } else {
                        out.push(b':');
                    }
                    i = j;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("only ASCII was inserted at ASCII positions")
}

/// `config` in protobuf text format, as Triton reads it.
pub fn config_text(config: &pb::ModelConfig) -> String {
    let dynamic = DynamicMessage::decode(model_config_descriptor(), config.encode_to_vec().as_slice()).expect("a message we encoded decodes");
    dynamic.to_text_format_with_options(&prost_reflect::text_format::FormatOptions::new().pretty(true))
}

/// `config` as Triton's REST API writes it (see [`to_json`]).
pub fn config_json(config: &pb::ModelConfig) -> serde_json::Value {
    to_json(config, "inference.ModelConfig")
}

/// A message as Triton's REST API writes it: the protobuf JSON mapping with the proto's own field names,
/// enum names, default fields included and 64-bit integers as numbers. `full_name` is its proto name.
pub fn to_json<M: Message>(message: &M, full_name: &str) -> serde_json::Value {
    let desc = pool().get_message_by_name(full_name).unwrap_or_else(|| panic!("{full_name} is declared in proto/inference.proto"));
    let dynamic = DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).expect("a message we encoded decodes");
    let options = SerializeOptions::new().use_proto_field_name(true).stringify_64_bit_integers(false).skip_default_fields(false);
    dynamic.serialize_with_options(serde_json::value::Serializer, &options).expect("a message serialises to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triton_text_format_and_names_the_line_of_an_error() {
        let text = "name: \"m\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\ninput [ { name: \"x\" data_type: TYPE_FP32 dims: [ 3, 4 ] } ]\n\
                    dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [ 4 ] }\n\
                    instance_group [ { count: 2 kind: KIND_CPU } ]\nparameters { key: \"k\" value: { string_value: \"v\" } }\n";
        let c = parse_config(text, Path::new("m/config.pbtxt")).unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input[0].dims, vec![3, 4]);
        assert_eq!(c.input[0].data_type, pb::DataType::TypeFp32 as i32);
        let Some(pb::model_config::SchedulingChoice::DynamicBatching(db)) = &c.scheduling_choice else { panic!("{c:?}") };
        assert_eq!((db.max_queue_delay_microseconds, db.preferred_batch_size.clone()), (100, vec![4]));
        assert_eq!(c.instance_group[0].count, 2);
        assert_eq!(c.parameters["k"].string_value, "v");

        // Triton's usual list syntax without a colon, with a comment and a string holding a bracket
        let usual = "name: \"m\"  # the model\noutput [\n  { name: \"p [x\" dims [ 2 ] }\n]\ninstance_group[{ count: 1 }]\n";
        let c2 = parse_config(usual, Path::new("u")).unwrap();
        assert_eq!((c2.output[0].name.as_str(), c2.output[0].dims.clone(), c2.instance_group[0].count), ("p [x", vec![2], 1));
        assert_eq!(colon_before_lists("a [1]\nb: [2]\n\"c [\""), "a:[1]\nb: [2]\n\"c [\"");

        let err = parse_config("name: \"m\"\nmax_batch_size: 8\noptimisation { }\n", Path::new("m/config.pbtxt")).unwrap_err();
        assert!(err.starts_with("m/config.pbtxt:3:1:"), "{err}");
        assert!(err.contains("optimisation"), "{err}");
        let err = parse_config("input [ { data_type: TYPE_FLOAT } ]", Path::new("c")).unwrap_err();
        assert!(err.contains("TYPE_FLOAT"), "{err}");

        // text and JSON writers
        let again = parse_config(&config_text(&c), Path::new("again")).unwrap();
        assert_eq!(again, c);
        let j = config_json(&c);
        assert_eq!(j["max_batch_size"], 8);
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["input"][0]["dims"], serde_json::json!([3, 4]));
        assert_eq!(j["dynamic_batching"]["max_queue_delay_microseconds"], 100);
    }
}
