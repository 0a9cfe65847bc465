//! Memory reports: replays a trace to find the peak and what was live at it, and
//! draws the timeline (allocated and reserved over the events, phases shaded,
//! the peak marked, the largest tensors at the peak listed) as an SVG.

use std::collections::HashMap;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::memory::format_bytes;
use crate::memory::timeline::{EventKind, MemPhase, Trace};
use crate::output::Input;

/// A tensor live at the peak.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveTensor {
    /// Size of its block, in bytes.
    pub bytes: u64,
    /// The op (or label) that allocated it.
    pub op: String,
    /// The phase it was allocated in.
    pub phase: MemPhase,
    /// The graph value it holds, when known.
    pub value: Option<u32>,
}

/// What [`analyze`] finds in a trace: the peak, what was live at it, and the
/// phases over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Index of the event at which allocated bytes first reached their peak.
    pub peak_event: usize,
    /// Highest allocated bytes in the trace (0 when it has no allocation).
    pub peak_allocated: u64,
    /// Highest reserved bytes in the trace; may come at another event.
    pub peak_reserved: u64,
    /// Phase of the allocation that made the peak.
    pub peak_phase: Option<MemPhase>,
    /// Largest tensors live at the peak, biggest first.
    pub top: Vec<LiveTensor>,
    /// Contiguous runs of events in one phase: (first, last, phase).
    pub spans: Vec<(usize, usize, MemPhase)>,
}

/// Replays `trace` to find where allocated bytes first peak and the `top_n`
/// largest tensors live there, and groups the events into phase spans.
pub fn analyze(trace: &Trace, top_n: usize) -> Analysis {
    let mut live: HashMap<u64, LiveTensor> = HashMap::new();
    let mut best: Option<(usize, u64, Vec<LiveTensor>)> = None;
    let mut peak_reserved = 0;
    for (i, e) in trace.events.iter().enumerate() {
        peak_reserved = peak_reserved.max(e.reserved);
        match e.kind {
            EventKind::Alloc => {
                live.insert(
                    e.addr,
                    LiveTensor {
                        bytes: e.bytes,
                        op: e.op.clone(),
                        phase: e.phase,
                        value: e.value,
                    },
                );
                if best.as_ref().is_none_or(|b| e.allocated > b.1) {
                    let mut v: Vec<LiveTensor> = live.values().cloned().collect();
                    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.op.cmp(&b.op)));
                    v.truncate(top_n);
                    best = Some((i, e.allocated, v));
                }
            }
            EventKind::Free => {
                live.remove(&e.addr);
            }
            _ => {}
        }
    }
    let mut spans: Vec<(usize, usize, MemPhase)> = Vec::new();
    for (i, e) in trace.events.iter().enumerate() {
        match spans.last_mut() {
            Some(s) if s.2 == e.phase => s.1 = i,
            _ => spans.push((i, i, e.phase)),
        }
    }
    let (peak_event, peak_allocated, top) = best.unwrap_or((0, 0, Vec::new()));
    Analysis {
        peak_event,
        peak_allocated,
        peak_reserved,
        peak_phase: trace.events.get(peak_event).map(|e| e.phase),
        top,
        spans,
    }
}

fn phase_color(p: MemPhase) -> RGBColor {
    match p {
        MemPhase::Setup => RGBColor(230, 230, 230),
        MemPhase::Data => RGBColor(255, 245, 200),
        MemPhase::Forward => RGBColor(210, 230, 255),
        MemPhase::Backward => RGBColor(255, 220, 210),
        MemPhase::Recompute => RGBColor(225, 210, 255),
        MemPhase::Optimizer => RGBColor(210, 245, 215),
        MemPhase::Eval => RGBColor(240, 240, 200),
    }
}

fn draw_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Internal(format!("drawing the timeline failed: {e:?}"))
}

/// Keeps the events of one step (`Some(n)`), or all of them.
pub fn select_step(trace: &Trace, step: Option<u64>) -> Result<Trace> {
    let mut t = trace.clone();
    if let Some(s) = step {
        t.events.retain(|e| e.step == s);
        if t.events.is_empty() {
            let last = trace.events.last().map_or(0, |e| e.step);
            return Err(Error::invalid(
                "report step",
                format!("the trace has no events for step {s}; it covers steps 0..={last}"),
            ));
        }
    }
    Ok(t)
}

/// Draws the timeline of `trace` into an SVG file at `out`, written by
/// [`crate::output::write`]: never over one of `inputs` (the trace itself,
/// say), through a symlink, atomically.
pub fn render_svg(trace: &Trace, out: &Path, inputs: &[Input]) -> Result<Analysis> {
    let (svg, a) = svg(trace)?;
    crate::output::write(out, "the report", svg.as_bytes(), inputs)?;
    Ok(a)
}

/// The timeline of `trace` as SVG text, and what [`analyze`] found in it.
pub fn svg(trace: &Trace) -> Result<(String, Analysis)> {
    if trace.events.is_empty() {
        return Err(Error::invalid("trace", "it holds no events"));
    }
    let a = analyze(trace, 8);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let n = trace.events.len();
    let ymax = mib(trace
        .events
        .iter()
        .map(|e| e.reserved)
        .max()
        .unwrap_or(0)
        .max(trace.budget_bytes.unwrap_or(0)))
        * 1.1
        + 1e-3;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (1200, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (upper, lower) = root.split_vertically(520);
        let mut chart = ChartBuilder::on(&upper)
            .caption(
                format!("headroom memory timeline — {}", trace.device),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("allocator event")
            .y_desc("MiB")
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        for &(s, e, p) in &a.spans {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(s as f64, 0.0), (e as f64 + 1.0, ymax)],
                    phase_color(p).filled(),
                )))
                .map_err(draw_err)?;
        }
        let mut seen = Vec::new();
        for &(_, _, p) in &a.spans {
            if !seen.contains(&p) {
                seen.push(p);
                chart
                    .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                    .map_err(draw_err)?
                    .label(p.name())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], phase_color(p).filled())
                    });
            }
        }
        let line = |f: fn(&crate::memory::timeline::Event) -> u64| {
            trace
                .events
                .iter()
                .enumerate()
                .flat_map(move |(i, e)| [(i as f64, mib(f(e))), (i as f64 + 1.0, mib(f(e)))])
        };
        chart
            .draw_series(LineSeries::new(
                line(|e| e.reserved),
                RGBColor(230, 120, 0).stroke_width(2),
            ))
            .map_err(draw_err)?
            .label("reserved")
            .legend(|(x, y)| {
                PathElement::new([(x, y), (x + 14, y)], RGBColor(230, 120, 0).stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(line(|e| e.allocated), BLUE.stroke_width(2)))
            .map_err(draw_err)?
            .label("allocated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLUE.stroke_width(2)));
        if let Some(b) = trace.budget_bytes {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, mib(b)), (n as f64, mib(b))],
                    RED.stroke_width(1),
                ))
                .map_err(draw_err)?
                .label("budget")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], RED));
        }
        let px = a.peak_event as f64;
        chart
            .draw_series(std::iter::once(Circle::new(
                (px, mib(a.peak_allocated)),
                6,
                RED.filled(),
            )))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("peak {}", format_bytes(a.peak_allocated)),
                (px, mib(a.peak_allocated)),
                ("sans-serif", 15).into_font().color(&RED),
            )))
            .map_err(draw_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;

        let mut lines = vec![format!(
            "peak allocated {} at event {} ({}), peak reserved {}{}",
            format_bytes(a.peak_allocated),
            a.peak_event,
            a.peak_phase.map_or("?", |p| p.name()),
            format_bytes(a.peak_reserved),
            trace
                .budget_bytes
                .map_or(String::new(), |b| format!(", budget {}", format_bytes(b)))
        )];
        lines.push("largest tensors live at the peak:".to_string());
        for t in &a.top {
            lines.push(format!(
                "  {:>12}  {:<22} {:<10} value {}",
                format_bytes(t.bytes),
                t.op,
                t.phase.name(),
                t.value.map_or("-".to_string(), |v| v.to_string())
            ));
        }
        for (i, l) in lines.iter().enumerate() {
            lower
                .draw(&Text::new(
                    l.clone(),
                    (24, 8 + 20 * i as i32),
                    ("monospace", 15).into_font(),
                ))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok((text, a))
}
