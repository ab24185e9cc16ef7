//! Progress bars for long work (packing records, training epochs): drawn on stderr when it is a
//! terminal and `enabled`, hidden otherwise so logs and CI output stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bar(len: u64, prefix: &str, enabled: bool) -> ProgressBar {
    let target = if enabled && std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}").expect("valid template").progress_chars("=> "));
    bar.set_prefix(prefix.to_string());
    bar
}
