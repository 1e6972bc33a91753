//! `-p`: a progress bar on stderr when it is a terminal, nothing otherwise
//! (indicatif).

use std::io::IsTerminal;

/// A bar over `total` bytes when `wanted` and stderr is a terminal.
pub fn bar(wanted: bool, total: u64) -> Option<indicatif::ProgressBar> {
    (wanted && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total.max(1));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {bytes}/{total_bytes} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

/// A `disk` progress callback (bytes done, bytes in all) drawing `bar`.
pub fn callback(bar: &Option<indicatif::ProgressBar>) -> impl FnMut(u64, u64) + '_ {
    move |done, total| {
        if let Some(b) = bar {
            b.set_length(total.max(1));
            b.set_position(done);
        }
    }
}
