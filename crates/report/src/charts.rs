//! Charts as inline SVG, drawn with plotters. Text is laid out with a bundled font's metrics
//! (DejaVu Sans, `assets/`), so the build needs no system font; the SVG names the generic
//! `sans-serif` family, which every browser has, and fetches nothing.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use signup_core::Channel;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bundled font is valid TrueType; should it ever fail to load, text is measured as
        // zero-width and the charts still render.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

pub const WIDTH: u32 = 920;
pub const HEIGHT: u32 = 400;

/// A colour and a dash pattern per series, so lines stay apart when printed in grey.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    pub color: RGBColor,
    pub dashed: bool,
    pub width: u32,
}

/// Design looks, the same on every chart. Each known design differs from the others in hue,
/// lightness or dash, so any two stay apart printed in grey and for readers with red-green colour
/// blindness: sync red and dashed, async blue and solid, broker orange (Okabe-Ito's, much lighter
/// than both) and dashed. `target` keeps its green; any other name gets one of [`FALLBACK`] by a
/// fixed hash of the name, so it looks the same on every chart and in every report.
pub fn design_look(design: &str) -> Look {
    match design {
        results::SYNC => Look {
            color: RGBColor(200, 40, 40),
            dashed: true,
            width: 2,
        },
        results::ASYNC => Look {
            color: RGBColor(30, 100, 180),
            dashed: false,
            width: 2,
        },
        results::BROKER => Look {
            color: RGBColor(230, 159, 0),
            dashed: true,
            width: 2,
        },
        results::TARGET => Look {
            color: RGBColor(40, 140, 60),
            dashed: false,
            width: 2,
        },
        other => FALLBACK[fnv1a(other) % FALLBACK.len()],
    }
}

/// Looks for designs fanbench does not know, from the Okabe-Ito palette's remaining colours
/// (bluish green, reddish purple, sky blue, vermillion), alternating solid and dashed.
pub const FALLBACK: [Look; 4] = [
    Look {
        color: RGBColor(0, 158, 115),
        dashed: false,
        width: 2,
    },
    Look {
        color: RGBColor(204, 121, 167),
        dashed: true,
        width: 2,
    },
    Look {
        color: RGBColor(86, 180, 233),
        dashed: false,
        width: 2,
    },
    Look {
        color: RGBColor(213, 94, 0),
        dashed: true,
        width: 2,
    },
];

/// FNV-1a: a hash that is the same in every process and on every machine (std's is seeded).
fn fnv1a(text: &str) -> usize {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // The low bits pick one of a handful of looks; truncating on 32-bit targets is fine.
    hash as usize
}

/// Channel colours for the per-channel charts, with the design's dash. Sync and broker are both
/// dashed, so the broker's lines are the channel's colour at half brightness.
pub fn channel_look(channel: &str, design: &str) -> Look {
    let RGBColor(r, g, b) = match channel.parse::<Channel>() {
        Ok(Channel::Email) => RGBColor(120, 60, 160),
        Ok(Channel::Sms) => RGBColor(220, 120, 20),
        Ok(Channel::Push) | Err(_) => RGBColor(20, 150, 150),
    };
    let color = if design == results::BROKER {
        RGBColor(r / 2, g / 2, b / 2)
    } else {
        RGBColor(r, g, b)
    };
    Look {
        color,
        ..design_look(design)
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub look: Look,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    Log,
}

/// How the x axis reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Seconds since the run's start.
    Seconds,
    /// Percentiles, spread out towards the tail: x = -log10(1 - p/100).
    Percentile,
    /// The offered rate of a capacity run's load steps.
    Rate,
    /// The values of the one design setting a capacity sweep varied.
    Setting,
}

/// A line chart, optionally with a second y axis on the right.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x: XAxis,
    pub y_label: String,
    pub y_scale: Scale,
    pub series: Vec<Series>,
    pub secondary: Option<(String, Vec<Series>)>,
}

/// The x position of a percentile on a [`XAxis::Percentile`] axis.
pub fn percentile_x(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.999_999)).log10()
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if p < 99.0 {
        format!("{p:.0}%")
    } else {
        format!("{}%", trim(p))
    }
}

/// Rates are whole sign-ups a second.
fn rate_label(x: &f64) -> String {
    format!("{x:.0}")
}

fn trim(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn bounds(series: &[Series], log: bool) -> (f64, f64) {
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite());
    let ys: Vec<f64> = if log {
        ys.filter(|y| *y > 0.0).collect()
    } else {
        ys.collect()
    };
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match (log, lo.is_finite() && hi.is_finite()) {
        (true, true) => (lo.max(1e-3) / 1.5, (hi * 1.5).max(lo * 10.0)),
        (true, false) => (0.1, 10.0),
        (false, true) => (0.0, if hi > 0.0 { hi * 1.1 } else { 1.0 }),
        (false, false) => (0.0, 1.0),
    }
}

fn x_bounds(chart: &LineChart) -> (f64, f64) {
    let all = chart
        .series
        .iter()
        .chain(chart.secondary.iter().flat_map(|(_, s)| s.iter()));
    let hi = all
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    match chart.x {
        XAxis::Seconds => (0.0, hi.max(1.0)),
        XAxis::Percentile => (0.0, hi.max(3.0).ceil()),
        XAxis::Rate | XAxis::Setting => (0.0, (hi * 1.05).max(1.0)),
    }
}

fn style(look: Look) -> ShapeStyle {
    ShapeStyle {
        color: look.color.to_rgba(),
        filled: false,
        stroke_width: look.width,
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What a chart may draw over its lines: points standing alone (one per repeated run of a
/// step, say) and vertical bands (the interval a limit lies in).
#[derive(Debug, Clone, Default)]
pub struct Overlay {
    pub dots: Vec<Series>,
    pub bands: Vec<Band>,
}

/// A vertical band from `from` to `to` on the x axis, the chart's full height, lightly filled.
#[derive(Debug, Clone)]
pub struct Band {
    pub label: String,
    pub color: RGBColor,
    pub from: f64,
    pub to: f64,
}

/// Renders a line chart as an SVG string.
pub fn line_chart(chart: &LineChart) -> String {
    line_chart_with(chart, &Overlay::default())
}

/// [`line_chart`] with dots and bands drawn over the lines.
pub fn line_chart_with(chart: &LineChart, overlay: &Overlay) -> String {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        if let Err(e) = draw_lines(&root, chart, overlay) {
            return error_svg(&chart.title, &e.to_string());
        }
        if root.present().is_err() {
            return error_svg(&chart.title, "could not finish the drawing");
        }
    }
    svg
}

fn draw_lines(
    root: &Area<'_>,
    chart: &LineChart,
    overlay: &Overlay,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (x0, x1) = x_bounds(chart);
    let x1 = overlay.bands.iter().map(|b| b.to * 1.05).fold(x1, f64::max);
    let with_dots: Vec<Series> = chart
        .series
        .iter()
        .chain(overlay.dots.iter())
        .cloned()
        .collect();
    let (y0, y1) = bounds(&with_dots, chart.y_scale == Scale::Log);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(if chart.secondary.is_some() { 70 } else { 0 });
    let x_desc = match chart.x {
        XAxis::Seconds => "time since start (s)",
        XAxis::Percentile => "percentile",
        XAxis::Rate => "offered rate (sign-ups/s)",
        XAxis::Setting => "setting value",
    };
    macro_rules! mesh {
        ($ctx:expr) => {{
            let mut mesh = $ctx.configure_mesh();
            mesh.x_desc(x_desc)
                .y_desc(&chart.y_label)
                .light_line_style(RGBColor(235, 235, 235));
            if chart.x == XAxis::Percentile {
                mesh.x_labels(((x1 - x0) as usize) + 1)
                    .x_label_formatter(&percentile_label);
            }
            if chart.x == XAxis::Rate {
                mesh.x_label_formatter(&rate_label);
            }
            mesh.draw()?;
        }};
    }
    macro_rules! legend {
        ($ctx:expr) => {
            $ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?
        };
    }
    // The secondary coordinate must be set before the primary mesh is drawn: until then the
    // primary axis owns the right-hand label area too and would label it.
    macro_rules! finish {
        ($ctx:expr) => {{
            let ctx = $ctx;
            match &chart.secondary {
                Some((label, secondary)) => {
                    let (s0, s1) = bounds(secondary, false);
                    let mut ctx = ctx.set_secondary_coord(x0..x1, s0..s1);
                    mesh!(ctx);
                    ctx.configure_secondary_axes().y_desc(label).draw()?;
                    draw_bands(&mut ctx, &overlay.bands, y0, y1)?;
                    for s in &chart.series {
                        draw_series(&mut ctx, s)?;
                    }
                    draw_dots(&mut ctx, &overlay.dots)?;
                    for s in secondary {
                        let look = s.look;
                        ctx.draw_secondary_series(LineSeries::new(
                            s.points.iter().copied(),
                            style(look),
                        ))?
                        .label(&s.label)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], style(look))
                        });
                    }
                    legend!(ctx);
                }
                None => {
                    let mut ctx = ctx;
                    mesh!(ctx);
                    draw_bands(&mut ctx, &overlay.bands, y0, y1)?;
                    for s in &chart.series {
                        draw_series(&mut ctx, s)?;
                    }
                    draw_dots(&mut ctx, &overlay.dots)?;
                    legend!(ctx);
                }
            }
        }};
    }
    match chart.y_scale {
        Scale::Linear => finish!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
        Scale::Log => finish!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?),
    }
    Ok(())
}

fn draw_series<'a, X, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    s: &Series,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let look = s.look;
    let points: Vec<(f64, f64)> = s
        .points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let anno = if look.dashed {
        ctx.draw_series(DashedLineSeries::new(points, 8, 5, style(look)))?
    } else {
        ctx.draw_series(LineSeries::new(points, style(look)))?
    };
    anno.label(&s.label).legend(move |(x, y)| {
        if look.dashed {
            PathElement::new(vec![(x, y), (x + 8, y)], style(look))
        } else {
            PathElement::new(vec![(x, y), (x + 20, y)], style(look))
        }
    });
    Ok(())
}

/// Each band as a light rectangle the chart's full height, under the lines.
fn draw_bands<'a, X, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    bands: &[Band],
    y0: f64,
    y1: f64,
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for b in bands {
        let fill = b.color.mix(0.15).filled();
        let color = b.color;
        ctx.draw_series(std::iter::once(Rectangle::new(
            [(b.from, y0), (b.to, y1)],
            fill,
        )))?
        .label(&b.label)
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 20, y + 5)], color.mix(0.3).filled())
        });
    }
    Ok(())
}

/// Each series as points alone, hollow circles in its colour.
fn draw_dots<'a, X, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    dots: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for s in dots {
        let look = s.look;
        ctx.draw_series(
            s.points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(move |p| Circle::new(p, 4, style(look))),
        )?
        .label(&s.label)
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, style(look)));
    }
    Ok(())
}

/// One horizontal stacked bar: labelled segments that add up.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<(String, f64)>,
}

/// Horizontal stacked bars (milliseconds), one per label; segment colours by position.
pub fn stacked_bars(title: &str, x_label: &str, bars: &[Bar]) -> String {
    register_font();
    let mut svg = String::new();
    {
        let height = (110 + 56 * bars.len() as u32).max(220);
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        if let Err(e) = draw_bars(&root, title, x_label, bars) {
            return error_svg(title, &e.to_string());
        }
        if root.present().is_err() {
            return error_svg(title, "could not finish the drawing");
        }
    }
    svg
}

const SEGMENT_COLORS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(120, 60, 160),
    RGBColor(220, 120, 20),
    RGBColor(20, 150, 150),
    RGBColor(30, 100, 180),
    RGBColor(200, 40, 40),
];

fn draw_bars(
    root: &Area<'_>,
    title: &str,
    x_label: &str,
    bars: &[Bar],
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let total = bars
        .iter()
        .map(|b| b.segments.iter().map(|s| s.1).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-3);
    let n = bars.len().max(1) as f64;
    let mut ctx = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..total * 1.15, 0.0..n)?;
    ctx.configure_mesh()
        .x_desc(x_label)
        .disable_y_mesh()
        .y_labels(0)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Bar i fills the band from n-i-1 to n-i: its label on top, the bar below it.
    let mut names: Vec<String> = Vec::new();
    for (i, bar) in bars.iter().enumerate() {
        let top = n - i as f64;
        ctx.draw_series(std::iter::once(Text::new(
            bar.label.clone(),
            (total * 0.005, top - 0.04),
            ("sans-serif", 14),
        )))?;
        let mut x = 0.0;
        for (name, value) in &bar.segments {
            let k = match names.iter().position(|n| n == name) {
                Some(k) => k,
                None => {
                    names.push(name.clone());
                    names.len() - 1
                }
            };
            let color = SEGMENT_COLORS[k % SEGMENT_COLORS.len()];
            let rect = Rectangle::new([(x, top - 0.9), (x + value, top - 0.4)], color.filled());
            ctx.draw_series(std::iter::once(rect))?;
            x += value;
        }
        let text = format!("{x:.1} ms");
        ctx.draw_series(std::iter::once(Text::new(
            text,
            (x + total * 0.01, top - 0.5),
            ("sans-serif", 13),
        )))?;
    }
    for (k, name) in names.iter().enumerate() {
        let color = SEGMENT_COLORS[k % SEGMENT_COLORS.len()];
        ctx.draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (0.0, 0.0)],
            color.filled(),
        )))?
        .label(name)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

/// A placeholder chart that says what is missing, so a section never silently lacks its chart.
pub fn note_svg(title: &str, note: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"120\" viewBox=\"0 0 {WIDTH} 120\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fafafa\" stroke=\"#ccc\"/>\
         <text x=\"20\" y=\"40\" font-family=\"sans-serif\" font-size=\"18\">{}</text>\
         <text x=\"20\" y=\"80\" font-family=\"sans-serif\" font-size=\"14\" fill=\"#555\">{}</text></svg>",
        crate::escape(title),
        crate::escape(note)
    )
}

fn error_svg(title: &str, error: &str) -> String {
    note_svg(title, &format!("this chart could not be drawn: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(&0.0), "0%");
        assert_eq!(percentile_label(&1.0), "90%");
        assert_eq!(percentile_label(&2.0), "99%");
        assert_eq!(percentile_label(&3.0), "99.9%");
        assert!((percentile_x(99.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_line_chart_is_an_svg_with_its_labels() {
        let chart = LineChart {
            title: "Latency".into(),
            x: XAxis::Seconds,
            y_label: "ms".into(),
            y_scale: Scale::Log,
            series: vec![Series {
                label: "sync p99".into(),
                look: design_look(results::SYNC),
                points: vec![(0.0, 1.0), (1.0, 100.0)],
            }],
            secondary: Some((
                "offered/s".into(),
                vec![Series {
                    label: "offered".into(),
                    look: Look {
                        color: BLACK,
                        dashed: false,
                        width: 1,
                    },
                    points: vec![(0.0, 10.0), (1.0, 20.0)],
                }],
            )),
        };
        let svg = line_chart(&chart);
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("Latency") && svg.contains("sync p99") && svg.contains("offered"));
    }

    /// Relative luminance (sRGB, linearised), 0 black to 1 white: what a line looks like in grey.
    fn luminance(c: RGBColor) -> f64 {
        let lin = |v: u8| {
            let v = f64::from(v) / 255.0;
            if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
    }

    #[test]
    fn the_three_designs_stay_apart_in_grey_and_in_colour() {
        let designs = [results::SYNC, results::ASYNC, results::BROKER];
        for (i, a) in designs.iter().enumerate() {
            for b in &designs[i + 1..] {
                let (la, lb) = (design_look(a), design_look(b));
                let apart_in_grey = la.dashed != lb.dashed
                    || (luminance(la.color) - luminance(lb.color)).abs() > 0.15;
                assert!(apart_in_grey, "{a} and {b} look alike in grey");
                assert_ne!(la.color, lb.color, "{a} and {b}");
            }
        }
        // On the per-channel charts the colour is the channel's, so the broker's (dashed like
        // sync's) is a darker shade of it, and async's solid.
        for channel in Channel::ALL.map(Channel::as_str) {
            let (s, a, b) = (
                channel_look(channel, results::SYNC),
                channel_look(channel, results::ASYNC),
                channel_look(channel, results::BROKER),
            );
            assert!(s.dashed && !a.dashed && b.dashed);
            // WCAG's contrast ratio between the two shades.
            let contrast = (luminance(s.color) + 0.05) / (luminance(b.color) + 0.05);
            assert!(contrast > 1.8, "{channel}: {contrast}");
        }
    }

    #[test]
    fn an_unknown_design_gets_a_fixed_fallback_look() {
        let known: Vec<RGBColor> = [results::SYNC, results::ASYNC, results::BROKER]
            .map(|d| design_look(d).color)
            .to_vec();
        for name in ["kafka", "redis-streams", "x", ""] {
            let look = design_look(name);
            assert!(FALLBACK.iter().any(|f| f.color == look.color), "{name}");
            assert!(!known.contains(&look.color), "{name}");
            assert_eq!(
                design_look(name).color,
                look.color,
                "{name}: the same every time"
            );
        }
        // FNV-1a's published value for "a", so the look does not change between builds.
        assert_eq!(fnv1a("a") as u64, 0xaf63_dc4c_8601_ec8c);
    }
}
