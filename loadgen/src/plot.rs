//! The latency percentile curve as SVG: one line per packet type, latency
//! (ms) against percentile on the usual 1/(1-p) axis.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

pub fn write_svg(report: &Report, path: &Path, title: &str) -> Result<(), String> {
    let series: Vec<(&'static str, Vec<(f64, f64)>)> = report
        .kinds
        .iter()
        .filter(|(_, k)| !k.latency_us.is_empty())
        .map(|(kind, k)| {
            let points = k
                .latency_us
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 0.99999)
                // x = log10(1/(1-p)): 1 = p90, 2 = p99, 3 = p99.9 ...
                .map(|v| {
                    (
                        (1.0 / (1.0 - v.quantile_iterated_to())).log10(),
                        v.value_iterated_to() as f64 / 1000.0,
                    )
                })
                .collect();
            (kind.name(), points)
        })
        .collect();
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.1f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..5f64, 0f64..max_y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| match x.round() as i32 {
            0 => "0%".into(),
            1 => "90%".into(),
            2 => "99%".into(),
            3 => "99.9%".into(),
            4 => "99.99%".into(),
            _ => "99.999%".into(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
