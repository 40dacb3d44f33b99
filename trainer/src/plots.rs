//! The run's curves in `<run>/plots/`, drawn with plotters as PNG and SVG:
//! - `loss.{png,svg}`: training loss per log interval (`metrics.csv`) and the eval loss at the
//!   end of each epoch (`summary.csv`), against the optimizer step;
//! - `lr.{png,svg}`: the learning rate per log interval, against the optimizer step;
//! - `accuracy.{png,svg}`: eval top-1 and top-5 per epoch.
//!
//! Text uses DejaVu Sans, built into the binary (`assets/`), so a machine without fonts draws
//! the same picture.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::{read_steps, STEP_FILE};

const SIZE: (u32, u32) = (800, 500);
/// matplotlib's first two default colours: train / top-1 blue, eval / top-5 orange.
pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
const FONT: &str = "sans-serif";

/// One curve: its legend entry, points, colour, and whether each point gets a marker (a few
/// per-epoch points) or only the line (per-step).
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    colour: RGBColor,
    markers: bool,
}

struct Chart {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<Series>,
    /// An upper bound of the y axis (100 for accuracies).
    y_max: Option<f64>,
}

/// Decimals for tick labels ~1/10 of `range` apart.
fn decimals(range: f64) -> usize {
    (1.0 - range.log10().floor()).clamp(0.0, 6.0) as usize
}

fn register_font() -> Result<()> {
    static FONT_OK: OnceLock<bool> = OnceLock::new();
    let ok = *FONT_OK.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
    });
    ok.then_some(()).ok_or_else(|| anyhow!("the built-in DejaVu Sans font did not load"))
}

/// `[lo, hi]` of the finite values, widened so that a single value or a flat line still has
/// a visible axis.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    Some((lo - pad, hi + pad))
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{}: {e:?}", chart.title);
    root.fill(&WHITE).map_err(err)?;
    // The legend gets its own strip under the chart, so that it never hides a point.
    let (plot_area, legend_area) = root.split_vertically(SIZE.1 - 36);
    let xs = span(chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0))).unwrap_or((0.0, 1.0));
    let ys = span(chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1))).unwrap_or((0.0, 1.0));
    let ys = (ys.0, chart.y_max.map_or(ys.1, |m| ys.1.min(m)));
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption(&chart.title, (FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
        .map_err(err)?;
    let small = ys.1.abs().max(ys.0.abs()) < 1e-2;
    let y_decimals = decimals(ys.1 - ys.0);
    // Integral x (steps, epochs): one label per unit when there are few of them.
    let x_labels = ((xs.1 - xs.0).floor() as usize + 1).clamp(2, 10);
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .x_labels(x_labels)
        .y_label_formatter(&|v| if small { format!("{v:.1e}") } else { format!("{v:.y_decimals$}") })
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    let mut x = 96;
    for s in chart.series.iter().filter(|s| !s.points.is_empty()) {
        let colour = s.colour;
        ctx.draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2))).map_err(err)?;
        if s.markers {
            ctx.draw_series(s.points.iter().map(|p| Circle::new(*p, 4, colour.filled()))).map_err(err)?;
        }
        // Legend entry: a stroke of the colour, then the label.
        legend_area.draw(&PathElement::new(vec![(x, 14), (x + 28, 14)], colour.stroke_width(3))).map_err(err)?;
        if s.markers {
            legend_area.draw(&Circle::new((x + 14, 14), 4, colour.filled())).map_err(err)?;
        }
        let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        legend_area.draw(&Text::new(s.label.clone(), (x + 36, 14), style)).map_err(err)?;
        x += 36 + 9 * s.label.chars().count() as i32 + 40;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn save(dir: &Path, stem: &str, chart: &Chart) -> Result<()> {
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), chart)?;
    let png = dir.join(format!("{stem}.png"));
    image::RgbImage::from_raw(SIZE.0, SIZE.1, rgb)
        .expect("buffer of the image's size")
        .save(&png)
        .map_err(|e| anyhow!("{}: {e}", png.display()))?;
    draw(SVGBackend::new(&dir.join(format!("{stem}.svg")), SIZE).into_drawing_area(), chart)
}

/// `summary.csv` columns (epoch, train_loss, eval_loss, eval_top1, eval_top5, lr), one row per epoch.
fn read_summary(path: &Path) -> Result<Vec<[f64; 6]>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(i, line)| {
            let v: Vec<f64> = line.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect();
            v.try_into().map_err(|_| anyhow!("{} line {}: expected 6 columns: '{line}'", path.display(), i + 1))
        })
        .collect()
}

/// Redraw every curve of the run in `run_dir` from its `summary.csv` and `metrics.csv`.
pub fn write(run_dir: &Path) -> Result<()> {
    register_font()?;
    let epochs = read_summary(&run_dir.join("summary.csv"))?;
    let steps = read_steps(&run_dir.join(STEP_FILE))?;
    let name = run_dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let dir = run_dir.join("plots");
    std::fs::create_dir_all(&dir)?;
    // An epoch's eval point sits at the last step logged in that epoch.
    let epoch_end = |epoch: f64| steps.iter().filter(|s| s.epoch as f64 == epoch).map(|s| s.step as f64).last();
    let eval_loss: Vec<(f64, f64)> =
        epochs.iter().filter(|r| r[2].is_finite()).filter_map(|r| Some((epoch_end(r[0])?, r[2]))).collect();
    let series = |label: &str, points: Vec<(f64, f64)>, colour, markers| Series {
        label: label.into(),
        points: points.into_iter().filter(|p| p.1.is_finite()).collect(),
        colour,
        markers,
    };
    let loss = Chart {
        title: format!("Loss — {name}"),
        x_label: "optimizer step",
        y_label: "cross-entropy (nats)",
        series: vec![
            series(
                "train, mean per log interval",
                steps.iter().map(|s| (s.step as f64, s.loss)).collect(),
                BLUE,
                false,
            ),
            series("eval, end of epoch", eval_loss, ORANGE, true),
        ],
        y_max: None,
    };
    let lr = Chart {
        title: format!("Learning rate — {name}"),
        x_label: "optimizer step",
        y_label: "learning rate",
        series: vec![series("lr", steps.iter().map(|s| (s.step as f64, s.lr)).collect(), BLUE, false)],
        y_max: None,
    };
    let accuracy = Chart {
        title: format!("Eval accuracy — {name}"),
        x_label: "epoch",
        y_label: "accuracy (%)",
        series: vec![
            series("top-1", epochs.iter().map(|r| (r[0], r[3])).collect(), BLUE, true),
            series("top-5", epochs.iter().map(|r| (r[0], r[4])).collect(), ORANGE, true),
        ],
        y_max: Some(100.0),
    };
    save(&dir, "loss", &loss)?;
    save(&dir, "lr", &lr)?;
    save(&dir, "accuracy", &accuracy)
}
