//! Order statistics over a handful of samples, and the comparison tables
//! every benchmark produces (our VMM against QEMU, one row per metric).

use serde::{Deserialize, Serialize};

/// Median, 90th percentile and range of one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

/// `None` for an empty series. The median of an even count is the mean of
/// the two middle values; the p90 is the nearest-rank one (the smallest
/// value with at least 90% of the samples at or below it).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let rank = (n * 9).div_ceil(10).max(1);
    Some(Summary {
        n,
        median,
        p90: s[rank - 1],
        min: s[0],
        max: s[n - 1],
    })
}

/// One metric measured on both VMMs (lower is better for all of ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub metric: String,
    pub unit: String,
    pub ours: Vec<f64>,
    pub qemu: Vec<f64>,
}

impl Series {
    pub fn new(metric: &str, unit: &str) -> Series {
        Series {
            metric: metric.into(),
            unit: unit.into(),
            ours: Vec::new(),
            qemu: Vec::new(),
        }
    }

    /// Median ours / median QEMU.
    pub fn ratio(&self) -> Option<f64> {
        let o = summarize(&self.ours)?;
        let q = summarize(&self.qemu)?;
        (q.median > 0.0).then(|| o.median / q.median)
    }
}

/// One benchmark's result: how it was run and its metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    /// The `vt-bench` command that produces this table on its own.
    pub command: String,
    /// Our VMM's command line (one run).
    pub ours_cmd: String,
    /// QEMU's command line (one run).
    pub qemu_cmd: String,
    pub notes: Vec<String>,
    pub series: Vec<Series>,
}

impl Table {
    pub fn series(&self, metric: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.metric == metric)
    }
}

fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn cell(samples: &[f64], unit: &str) -> String {
    match summarize(samples) {
        Some(s) => format!(
            "**{} {unit}** (p90 {}, {}–{}, n={})",
            num(s.median),
            num(s.p90),
            num(s.min),
            num(s.max),
            s.n
        ),
        None => "–".into(),
    }
}

/// The table as Markdown: title, commands, notes, one row per metric.
pub fn markdown(t: &Table) -> String {
    let mut m = format!("### {}\n\n", t.title);
    m.push_str(&format!("Command: `{}`\n\n", t.command));
    m.push_str(&format!(
        "- ours: `{}`\n- QEMU: `{}`\n",
        t.ours_cmd, t.qemu_cmd
    ));
    for n in &t.notes {
        m.push_str(&format!("- {n}\n"));
    }
    m.push_str(
        "\n| metric | vt-vmm median (p90, min–max) | QEMU median (p90, min–max) | ours / QEMU |\n",
    );
    m.push_str("|---|---|---|---|\n");
    for s in &t.series {
        let ratio = s.ratio().map_or_else(|| "–".into(), |r| format!("{r:.2}×"));
        m.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.metric,
            cell(&s.ours, &s.unit),
            cell(&s.qemu, &s.unit),
            ratio
        ));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_p90() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(summarize(&twenty).unwrap().p90, 18.0);
        assert_eq!(summarize(&[7.0]).unwrap().p90, 7.0);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn ratio_and_markdown() {
        let mut s = Series::new("exit", "ms");
        s.ours = vec![8.0, 10.0, 9.0];
        s.qemu = vec![50.0, 60.0, 45.0];
        assert!((s.ratio().unwrap() - 0.18).abs() < 1e-9);
        let t = Table {
            title: "T".into(),
            command: "vt-bench x".into(),
            ours_cmd: "a".into(),
            qemu_cmd: "b".into(),
            notes: vec![],
            series: vec![s],
        };
        let md = markdown(&t);
        assert!(md.contains("| exit | **9.00 ms** (p90 10.0, 8.00–10.0, n=3) | **50.0 ms**"));
        assert!(md.contains("| 0.18× |"));
    }
}
