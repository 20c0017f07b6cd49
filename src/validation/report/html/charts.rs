//! The report's pictures, drawn with plotters' SVG backend: error growth through the layers
//! (one chart per checkpoint and pass, a line per pair of sources) and |diff| heatmaps.

use plotters::prelude::*;

use crate::validation::compare::Panel;

/// One pair's error at each layer: (layer, max |diff|, RMS, failed).
pub struct Series {
    pub label: String,
    pub points: Vec<(usize, f64, f64, bool)>,
    /// Pairs against the float64 truth are drawn in full; the others lighter.
    pub against_truth: bool,
}

/// Errors below this are drawn at it: a log axis has no zero.
const FLOOR: f64 = 1e-10;

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Max |diff| (solid, dots) and RMS (dashed; left out where NaN) against layer (or, with another
/// `x_desc`, a decode step) on a log axis, one colour per pair, failing points crossed in red,
/// the tolerance's atol as a grey line. `y_desc` names the solid line's measure; x runs from 0 to
/// `layers` − 1.
pub fn error_growth(
    title: &str,
    (x_desc, y_desc): (&str, &str),
    layers: usize,
    series: &[Series],
    atol: Option<f64>,
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (460, 300)).into_drawing_area();
        let _ = draw_growth(&root, title, (x_desc, y_desc), layers, series, atol);
        let _ = root.present();
    }
    svg
}

fn draw_growth(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    layers: usize,
    series: &[Series],
    atol: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.2]))
        .filter(|v| !v.is_nan())
        .chain(atol);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        let v = if v.is_finite() { v.max(FLOOR) } else { FLOOR };
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo / 3.0, hi * 3.0) } else { (FLOOR, 1.0) };
    let x_end = layers.max(1) as f64 - 0.5;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..x_end, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(layers.clamp(1, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    if let Some(atol) = atol {
        chart
            .draw_series(LineSeries::new([(-0.5, atol), (x_end, atol)], BLACK.mix(0.35).stroke_width(1)))?
            .label(format!("atol {atol:.0e}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.35)));
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = if s.against_truth { color.stroke_width(2) } else { color.mix(0.6).stroke_width(1) };
        let at = |v: f64| if v.is_finite() { v.max(FLOOR) } else { hi };
        let max: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0 as f64, at(p.1))).collect();
        let rms: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0 as f64, at(p.2))).collect();
        chart
            .draw_series(LineSeries::new(max.clone(), style).point_size(2))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        if s.points.iter().any(|p| !p.2.is_nan()) {
            chart.draw_series(DashedLineSeries::new(rms, 4, 3, color.mix(0.6).stroke_width(1)))?;
        }
        let failed = s
            .points
            .iter()
            .filter(|p| p.3)
            .map(|p| Cross::new((p.0 as f64, at(p.1)), 5, RED.stroke_width(2)));
        chart.draw_series(failed)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.2))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

/// One panel of a heatmap: a cell per pooled block, coloured by log10 |diff| from `scale.0`
/// (dark) to `scale.1` (bright); NaN (masked) cells are left light grey.
pub fn heatmap_panel(panel: &Panel, scale: (f64, f64)) -> String {
    let (rows, cols) = panel.cells;
    // Cells of a few pixels, larger when there are few of them (a 2-token prompt).
    let cell = ((240 / rows.max(1)).clamp(6, 24) as u32, (480 / cols.max(1)).clamp(3, 24) as u32);
    let size = (cols as u32 * cell.1 + 2, rows as u32 * cell.0 + 2);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let _ = root.fill(&RGBColor(235, 235, 235));
        let (lo, hi) = (scale.0.max(FLOOR).log10(), scale.1.max(FLOOR).log10());
        for r in 0..rows {
            for c in 0..cols {
                let v = panel.values[r * cols + c];
                if v.is_nan() {
                    continue;
                }
                let t = if hi > lo { ((v.max(FLOOR).log10() - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 1.0 };
                let (x, y) = (1 + c as i32 * cell.1 as i32, 1 + r as i32 * cell.0 as i32);
                let rect =
                    Rectangle::new([(x, y), (x + cell.1 as i32, y + cell.0 as i32)], colormap(t).filled());
                let _ = root.draw(&rect);
            }
        }
        let _ = root.present();
    }
    svg
}

/// A perceptually ordered ramp (dark blue → teal → yellow), as CSS and the cells use it.
pub fn colormap(t: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [13.0, 8.0, 135.0]),
        (0.25, [84.0, 2.0, 163.0]),
        (0.5, [185.0, 50.0, 137.0]),
        (0.75, [242.0, 132.0, 75.0]),
        (1.0, [240.0, 249.0, 33.0]),
    ];
    let t = t.clamp(0.0, 1.0);
    let i = STOPS.iter().position(|s| s.0 >= t).unwrap_or(STOPS.len() - 1).max(1);
    let ((t0, a), (t1, b)) = (STOPS[i - 1], STOPS[i]);
    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
    let mix = |k: usize| (a[k] + (b[k] - a[k]) * f).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}
