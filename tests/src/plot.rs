//! The failover benchmark's plot: every client-visible gap of every failover, one strip of
//! points per kind of failure with its median, against horizontal reference lines (the target
//! and keepalived's figure). SVG only, text left to the viewer's fonts: plotters is built
//! without its font features, so nothing here reads a font file.

use std::path::Path;

use plotters::{
    coord::Shift,
    prelude::{
        BLACK, ChartBuilder, Circle, Color, DashedLineSeries, DrawingArea, IntoDrawingArea, LineSeries,
        PathElement, RGBColor, SVGBackend, Text, TextStyle, WHITE,
    },
    style::text_anchor::{HPos, Pos, VPos},
};

/// The gaps of one kind of failure, in milliseconds.
pub struct Strip<'a> {
    pub label: &'a str,
    pub gaps_ms: &'a [f64],
}

/// A horizontal line across the plot, at `ms`.
pub struct Reference<'a> {
    pub label: &'a str,
    pub ms: f64,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const REFERENCE_COLOURS: [RGBColor; 2] = [RGBColor(214, 39, 40), RGBColor(90, 90, 90)];

const WIDTH: u32 = 960;
const HEIGHT: u32 = 560;
/// The legend's own strip under the chart, so that it never hides a point.
const LEGEND_HEIGHT: u32 = 90;
/// Half the width of a strip, in category units (strips are 1 apart).
const HALF_WIDTH: f64 = 0.3;
const FONT: &str = "sans-serif";

/// The median of `values` (the upper one of the middle two, as the benchmark's table reports).
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The SVG text of the plot.
#[must_use]
pub fn failover_gaps_svg(title: &str, strips: &[Strip<'_>], references: &[Reference<'_>]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, title, strips, references).expect("drawing into a string cannot fail");
        root.present().expect("presenting into a string cannot fail");
    }
    svg
}

/// Writes the plot to `path`.
pub fn write_failover_gaps_svg(
    path: &Path,
    title: &str,
    strips: &[Strip<'_>],
    references: &[Reference<'_>],
) -> std::io::Result<()> {
    std::fs::write(path, failover_gaps_svg(title, strips, references))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What a legend entry shows beside its text.
enum Key {
    Point(RGBColor),
    Bar,
    Dashed(RGBColor),
}

fn draw(root: &Area<'_>, title: &str, strips: &[Strip<'_>], references: &[Reference<'_>]) -> DrawResult {
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(HEIGHT - LEGEND_HEIGHT);
    let y_max = y_top(strips, references);
    let x_max = index(strips.len()) - 0.5;
    let labels: Vec<&str> = strips.iter().map(|s| s.label).collect();
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(strips.len() + 1)
        .x_label_formatter(&|x| category(&labels, *x))
        .y_labels(12)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("gap seen by the client (ms)")
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 18))
        .draw()?;

    let mut legend = Vec::new();
    for (i, strip) in strips.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let centre = index(i);
        let n = strip.gaps_ms.len();
        // Spread the points across the strip in the order they were measured, so that equal
        // gaps stay visible and a trend over the rounds shows from left to right.
        let points = strip.gaps_ms.iter().enumerate().map(move |(j, &g)| {
            let offset = if n > 1 {
                (index(j) / index(n - 1) - 0.5) * 2.0 * HALF_WIDTH * 0.8
            } else {
                0.0
            };
            (centre + offset, g)
        });
        chart.draw_series(points.map(move |p| Circle::new(p, 4, colour.mix(0.75).filled())))?;
        legend.push((Key::Point(colour), format!("{}: {n} failovers", strip.label)));
        if let Some(m) = median(strip.gaps_ms) {
            chart.draw_series(LineSeries::new(
                [(centre - HALF_WIDTH, m), (centre + HALF_WIDTH, m)],
                BLACK.stroke_width(3),
            ))?;
        }
    }
    if strips.iter().any(|s| !s.gaps_ms.is_empty()) {
        legend.push((Key::Bar, "median of the kind".to_owned()));
    }
    for (i, r) in references.iter().enumerate() {
        let colour = REFERENCE_COLOURS[i % REFERENCE_COLOURS.len()];
        chart.draw_series(DashedLineSeries::new(
            [(-0.5, r.ms), (x_max, r.ms)],
            8,
            5,
            colour.stroke_width(2),
        ))?;
        legend.push((Key::Dashed(colour), format!("{} ({} ms)", r.label, r.ms)));
    }
    draw_legend(&lower, &legend)
}

/// The legend in columns of three rows, under the chart.
fn draw_legend(area: &Area<'_>, entries: &[(Key, String)]) -> DrawResult {
    const ROWS: usize = 3;
    const ROW: i32 = 24;
    const LEFT: i32 = 60;
    let pixels = |n: usize| i32::try_from(n).expect("a handful of legend entries");
    let columns = pixels(entries.len().div_ceil(ROWS).max(1));
    let column = (i32::try_from(WIDTH).expect("width") - LEFT) / columns;
    for (i, (key, text)) in entries.iter().enumerate() {
        let x = LEFT + pixels(i / ROWS) * column;
        let y = 12 + pixels(i % ROWS) * ROW;
        match key {
            Key::Point(c) => area.draw(&Circle::new((x + 12, y), 5, c.filled()))?,
            Key::Bar => area.draw(&PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(3)))?,
            Key::Dashed(c) => {
                for dash in [x, x + 13] {
                    area.draw(&PathElement::new([(dash, y), (dash + 9, y)], c.stroke_width(2)))?;
                }
            }
        }
        area.draw(&Text::new(
            text.as_str(),
            (x + 32, y),
            TextStyle::from((FONT, 17)).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// A strip's or a point's index as a coordinate.
fn index(i: usize) -> f64 {
    f64::from(u32::try_from(i).expect("a plot of a handful of strips"))
}

/// The top of the y axis: a tenth above the highest gap or reference, rounded up to 5 ms.
fn y_top(strips: &[Strip<'_>], references: &[Reference<'_>]) -> f64 {
    let top = strips
        .iter()
        .flat_map(|s| s.gaps_ms.iter().copied())
        .chain(references.iter().map(|r| r.ms))
        .fold(1.0_f64, f64::max);
    (top * 1.1 / 5.0).ceil() * 5.0
}

/// The category label at `x` (strips sit on the integers); blank between them.
fn category(labels: &[&str], x: f64) -> String {
    labels
        .iter()
        .zip(0_u32..)
        .find(|&(_, n)| (f64::from(n) - x).abs() < 1e-9)
        .map_or_else(String::new, |(l, _)| (*l).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strips<'a>(a: &'a [f64], b: &'a [f64], c: &'a [f64]) -> [Strip<'a>; 3] {
        [
            Strip {
                label: "ServiceStop",
                gaps_ms: a,
            },
            Strip {
                label: "LinkDown",
                gaps_ms: b,
            },
            Strip {
                label: "Freeze",
                gaps_ms: c,
            },
        ]
    }

    const REFERENCES: [Reference<'static>; 2] = [
        Reference {
            label: "keepalived VRRPv3 median",
            ms: 41.0,
        },
        Reference {
            label: "target median",
            ms: 35.0,
        },
    ];

    #[test]
    fn a_plot_of_made_up_gaps_names_every_series_and_draws_every_point() {
        let a: Vec<f64> = (0..20).map(|i| 28.0 + f64::from(i) * 0.4).collect();
        let b: Vec<f64> = (0..20).map(|i| 4.0 + f64::from(i % 7)).collect();
        let c = [30.0, 31.5, 29.0, 38.0, 27.5];
        let dir = tempfile::Builder::new()
            .prefix("vnfpool-plot-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("gaps.svg");
        write_failover_gaps_svg(&path, "failover gaps", &strips(&a, &b, &c), &REFERENCES)
            .expect("write the plot");
        let svg = std::fs::read_to_string(&path).expect("read the plot back");
        dir.close().expect("remove temp dir");

        assert!(
            svg.starts_with("<svg"),
            "not an SVG: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "failover gaps",
            "ServiceStop: 20 failovers",
            "LinkDown: 20 failovers",
            "Freeze: 5 failovers",
            "median of the kind",
            "keepalived VRRPv3 median (41 ms)",
            "target median (35 ms)",
            "gap seen by the client (ms)",
            "\nServiceStop\n",
            "\nLinkDown\n",
            "\nFreeze\n",
        ] {
            assert!(svg.contains(text), "the plot lacks {text:?}");
        }
        // Every gap is a point, and the legend has one more per strip.
        assert_eq!(svg.matches("<circle").count(), 20 + 20 + 5 + 3, "{svg}");
    }

    #[test]
    fn the_y_axis_reaches_above_the_highest_gap_and_reference() {
        let top = |s: &[Strip<'_>], r: &[Reference<'_>]| y_top(s, r).to_string();
        assert_eq!(top(&strips(&[120.0], &[3.0], &[]), &REFERENCES), "135");
        assert_eq!(top(&strips(&[12.0], &[3.0], &[]), &REFERENCES), "50");
        assert_eq!(top(&strips(&[], &[], &[]), &[]), "5");
        // Ticks are whole milliseconds; an empty strip still has its category label.
        let svg = failover_gaps_svg("t", &strips(&[120.0], &[], &[]), &REFERENCES);
        let ticks: Vec<f64> = svg
            .split('>')
            .filter_map(|s| s.strip_suffix("</text").and_then(|t| t.trim().parse().ok()))
            .collect();
        assert!(ticks.contains(&0.0) && ticks.contains(&120.0), "{ticks:?}");
        assert!(svg.contains("\nLinkDown\n"));
    }

    #[test]
    fn the_median_is_the_benchmark_tables() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }
}
