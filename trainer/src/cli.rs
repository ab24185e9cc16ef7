//! What the `trainer` subcommands print; kept in the library so tests call the same code.

use anyhow::Result;
use models::describe::describe;
use models::zoo::{self, REGISTRY};

/// `trainer models [--json]`.
pub fn list_models(json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(REGISTRY)?);
        return Ok(());
    }
    println!("{:<16}  {:<14}  {:<12}  {:>7}  description", "name", "task", "input", "classes");
    for m in REGISTRY {
        let [c, h, w] = m.input;
        println!("{:<16}  {:<14}  {:<12}  {:>7}  {}", m.name, m.task, format!("{c}x{h}x{w}"), m.default_classes, m.summary);
    }
    Ok(())
}

/// `trainer models describe NAME [--num-classes K] [--in-channels C] [--json]`.
pub fn describe_model(name: &str, num_classes: Option<usize>, in_channels: Option<usize>, json: bool) -> Result<()> {
    let g = zoo::build(name, num_classes, in_channels)?;
    let d = describe(&g)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        println!("{d}");
    }
    Ok(())
}
