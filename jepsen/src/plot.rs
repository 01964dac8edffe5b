//! Two SVG plots per run: latency over time (one dot per operation, colour
//! by result) and throughput per second, both with the nemesis intervals
//! shaded.
//!
//! Written by hand rather than with a plotting crate: plotters needs a font
//! backend (font-kit, i.e. system fontconfig/freetype) to place text, and an
//! SVG of dots, lines and rectangles is a few dozen lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::history::{NemesisEvent, NemesisPhase, Op, OpResult};

const W: f64 = 1000.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// (start, end, kind) of each fault, in seconds; an unclosed fault ends at `end_s`.
pub fn fault_intervals(events: &[NemesisEvent], end_s: f64) -> Vec<(f64, f64, String)> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        let t = e.at_ns as f64 / 1e9;
        match e.phase {
            NemesisPhase::Start => {
                open.insert(e.kind.clone(), t);
            }
            NemesisPhase::Stop => {
                if let Some(s) = open.remove(&e.kind) {
                    out.push((s, t, e.kind.clone()));
                }
            }
        }
    }
    for (k, s) in open {
        out.push((s, end_s, k));
    }
    out
}

fn colour(r: &OpResult) -> &'static str {
    match r {
        OpResult::Ok(_) => "#2a7ab0",
        OpResult::Fail(_) => "#d9822b",
        OpResult::Info(_) => "#c0392b",
    }
}

struct Frame {
    x_max: f64,
    y_min: f64,
    y_max: f64,
    log_y: bool,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.x_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        let (v, lo, hi) = if self.log_y {
            (v.max(self.y_min).log10(), self.y_min.log10(), self.y_max.log10())
        } else {
            (v, self.y_min, self.y_max)
        };
        let f = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.0 };
        H - BOTTOM - f * (H - TOP - BOTTOM)
    }
}

fn header(svg: &mut String, title: &str) {
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"14\">{title}</text>"
    );
}

fn shade(svg: &mut String, f: &Frame, faults: &[(f64, f64, String)]) {
    for (s, e, kind) in faults {
        let (x0, x1) = (f.x(*s), f.x(*e));
        let _ = write!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f5b041\" fill-opacity=\"0.25\"><title>{kind}</title></rect>\
             <text x=\"{x0:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"#9c640c\">{kind}</text>",
            (x1 - x0).max(1.0),
            H - TOP - BOTTOM,
            TOP + 10.0
        );
    }
}

fn axes(svg: &mut String, f: &Frame, y_label: &str, y_ticks: &[f64]) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = write!(svg, "<path d=\"M{x0} {y0} V{y1} H{x1}\" stroke=\"black\" fill=\"none\"/>");
    let step = nice_step(f.x_max);
    let mut t = 0.0;
    while t <= f.x_max + 1e-9 {
        let x = f.x(t);
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}</text>",
            y1 + 15.0
        );
        t += step;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (s)</text>",
        (x0 + x1) / 2.0,
        H - 5.0
    );
    for &v in y_ticks {
        let y = f.y(v);
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><path d=\"M{x0} {y:.1} H{x1}\" stroke=\"#eee\"/>",
            x0 - 5.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"15\" y=\"{:.1}\" transform=\"rotate(-90 15 {:.1})\" text-anchor=\"middle\">{y_label}</text>",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

fn nice_step(max: f64) -> f64 {
    let raw = (max / 10.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(raw)
}

fn fmt_tick(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Latency (ms, log scale) of every completed operation against its start time.
pub fn latency_svg(ops: &[Op], events: &[NemesisEvent], end_s: f64) -> String {
    let f = Frame { x_max: end_s.max(1.0), y_min: 0.1, y_max: 10_000.0, log_y: true };
    let mut svg = String::new();
    header(&mut svg, "latency per operation (ms; blue ok, orange fail, red info)");
    shade(&mut svg, &f, &fault_intervals(events, end_s));
    axes(&mut svg, &f, "latency (ms)", &[0.1, 1.0, 10.0, 100.0, 1_000.0, 10_000.0]);
    for op in ops {
        let Some(done) = op.complete_ns else { continue };
        let t = op.invoke_ns as f64 / 1e9;
        let ms = (done.saturating_sub(op.invoke_ns)) as f64 / 1e6;
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{}\" fill-opacity=\"0.6\"/>",
            f.x(t),
            f.y(ms),
            colour(&op.result)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Completed operations per second, by result.
pub fn throughput_svg(ops: &[Op], events: &[NemesisEvent], end_s: f64) -> String {
    let secs = end_s.ceil().max(1.0) as usize;
    let mut buckets = vec![[0u32; 3]; secs + 1];
    for op in ops {
        let Some(done) = op.complete_ns else { continue };
        let s = ((done as f64 / 1e9) as usize).min(secs);
        let i = match op.result {
            OpResult::Ok(_) => 0,
            OpResult::Fail(_) => 1,
            OpResult::Info(_) => 2,
        };
        buckets[s][i] += 1;
    }
    let peak = buckets.iter().flat_map(|b| b.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let f = Frame { x_max: end_s.max(1.0), y_min: 0.0, y_max: peak * 1.1, log_y: false };
    let mut svg = String::new();
    header(&mut svg, "throughput (ops/s; blue ok, orange fail, red info)");
    shade(&mut svg, &f, &fault_intervals(events, end_s));
    let ticks: Vec<f64> = (0..=4).map(|i| (peak * 1.1 * i as f64 / 4.0).round()).collect();
    axes(&mut svg, &f, "ops/s", &ticks);
    for (i, col) in ["#2a7ab0", "#d9822b", "#c0392b"].iter().enumerate() {
        let mut d = String::new();
        for (s, b) in buckets.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1} ",
                if s == 0 { "M" } else { "L" },
                f.x(s as f64 + 0.5),
                f.y(f64::from(b[i]))
            );
        }
        let _ =
            write!(svg, "<path d=\"{d}\" stroke=\"{col}\" fill=\"none\" stroke-width=\"1.5\"/>");
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Call, Ret};

    #[test]
    fn intervals_pair_start_and_stop_and_close_open_ones() {
        let ev = |t: u64, kind: &str, phase| NemesisEvent {
            at_ns: t * 1_000_000_000,
            kind: kind.into(),
            detail: String::new(),
            phase,
        };
        let events = vec![
            ev(1, "kill", NemesisPhase::Start),
            ev(3, "kill", NemesisPhase::Stop),
            ev(5, "pause", NemesisPhase::Start),
        ];
        assert_eq!(
            fault_intervals(&events, 9.0),
            vec![(1.0, 3.0, "kill".into()), (5.0, 9.0, "pause".into())]
        );
    }

    #[test]
    fn plots_are_svg_with_one_dot_per_completed_op() {
        let op = |id, t: u64, done: Option<u64>| Op {
            id,
            process: 1,
            key: "k".into(),
            call: Call::Lookup,
            result: OpResult::Ok(Ret::Found(None)),
            invoke_ns: t,
            complete_ns: done,
        };
        let ops = vec![op(1, 0, Some(2_000_000)), op(2, 1_000_000_000, None)];
        let svg = latency_svg(&ops, &[], 2.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 1);
        let svg = throughput_svg(&ops, &[], 2.0);
        assert_eq!(svg.matches("stroke-width=\"1.5\"").count(), 3, "one line per result kind");
    }
}
