//! `trainer models` and `trainer models describe`: the registry as users see it.

use tests::{run_bin, text};

#[test]
fn models_lists_every_registered_name_with_task_and_input() {
    let o = run_bin("trainer", &["models", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, models::zoo::names());
    for expected in ["alexnet", "alexnet-bn-relu", "alexnet-relu-bn", "vgg16", "googlenet", "resnet50", "squeezenet", "emotion-vgg", "age-gender", "mini-vgg"] {
        assert!(names.contains(&expected), "{expected}");
    }
    let emotion = list.iter().find(|m| m["name"] == "emotion-vgg").unwrap();
    assert_eq!(emotion["input"], serde_json::json!([1, 48, 48]));
    assert_eq!(emotion["task"], "classification");

    let o = run_bin("trainer", &["models"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.lines().any(|l| l.starts_with("resnet50") && l.contains("3x224x224") && l.contains("1000")), "{table}");
}

#[test]
fn describe_prints_shapes_parameters_and_totals() {
    let o = run_bin("trainer", &["models", "describe", "vgg16", "--num-classes", "10", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let params = d["params"].as_array().unwrap();
    let classifier = params.iter().find(|p| p["name"] == "classifier.weight").unwrap();
    assert_eq!(classifier["shape"], serde_json::json!([10, 4096]));
    let pool5 = d["layers"].as_array().unwrap().iter().find(|l| l["name"] == "block5.pool").unwrap();
    assert_eq!(pool5["output"], serde_json::json!([512, 7, 7]));
    // 138,357,544 weights with 1000 classes; 10 classes remove 990 * 4097 of them
    assert_eq!(d["totals"]["weights"], 138_357_544 - 990 * 4097);

    let o = run_bin("trainer", &["models", "describe", "alexnet"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("62,378,344"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("block1.conv ") && l.contains("[96, 55, 55]")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("block1.bn.weight") && l.contains("(not trained)")), "{out}");
}

#[test]
fn describe_an_unknown_model_lists_the_valid_names() {
    let o = run_bin("trainer", &["models", "describe", "resnet51"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown model 'resnet51'") && err.contains("resnet50") && err.contains("mini-vgg"), "{err}");
}
