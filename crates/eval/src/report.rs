//! A self-contained HTML report: tables per skill (Avg@k, success, pass@j, outcomes, cost), a
//! before/after comparison when there are several runs, and SVG charts drawn with plotters
//! (no scripts, no external files).

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::metrics::{SkillSummary, Summary};

/// A line chart: named series of (x, y) points.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    /// Labelled evaluation runs, in order (e.g. "before", "after").
    pub runs: Vec<(String, Summary)>,
    /// Extra charts (training curves), drawn after the evaluation's own.
    pub charts: Vec<Chart>,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.sub{color:#666}\
.charts{display:flex;flex-wrap:wrap;gap:1em}.up{color:#080}.down{color:#b00}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "–".into()
    } else {
        format!("{value:.3}")
    }
}

fn skill_rows(summary: &Summary) -> impl Iterator<Item = &SkillSummary> {
    summary.skills.iter().chain(std::iter::once(&summary.total))
}

fn results_table(html: &mut String, summary: &Summary) {
    let k = summary.k;
    html.push_str("<table><tr><th>skill</th><th>instances</th><th>episodes</th>");
    let _ = write!(html, "<th>Avg@{k} reward</th><th>Avg@{k} success</th>");
    for j in 1..=k {
        let _ = write!(html, "<th>pass@{j}</th>");
    }
    html.push_str(
        "<th>steps</th><th>tokens</th><th>agent s</th><th>grade s</th><th>unscored</th></tr>",
    );
    for s in skill_rows(summary) {
        let name = if s.composite {
            format!("{} (composite)", s.skill)
        } else {
            s.skill.clone()
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&name),
            s.instances,
            s.episodes,
            number(s.avg_reward),
            number(s.avg_success)
        );
        for p in &s.pass_at {
            let _ = write!(html, "<td>{}</td>", number(*p));
        }
        let _ = write!(
            html,
            "<td>{:.1}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            s.mean_steps,
            s.mean_tokens,
            s.mean_agent_seconds,
            s.mean_grade_seconds,
            s.infrastructure_failures
        );
    }
    html.push_str("</table>");
}

fn outcome_table(html: &mut String, summary: &Summary) {
    html.push_str("<table><tr><th>skill</th>");
    for kind in agent::OutcomeKind::ALL {
        let _ = write!(html, "<th>{kind}</th>");
    }
    html.push_str("<th title=\"graded 0 because the answer changed how the tests run or report\">tampered</th></tr>");
    for s in skill_rows(summary) {
        let _ = write!(html, "<tr><td>{}</td>", escape(&s.skill));
        for kind in agent::OutcomeKind::ALL {
            let n = s.outcomes.get(kind.as_str()).copied().unwrap_or(0);
            let _ = write!(html, "<td>{n}</td>");
        }
        let _ = write!(html, "<td>{}</td>", s.tampered);
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

fn comparison_table(html: &mut String, runs: &[(String, Summary)]) {
    let k = runs[0].1.k;
    let _ = write!(html, "<table><tr><th>skill (Avg@{k} reward)</th>");
    for (label, _) in runs {
        let _ = write!(html, "<th>{}</th>", escape(label));
    }
    html.push_str("<th>change</th></tr>");
    for s in skill_rows(&runs[0].1) {
        let _ = write!(html, "<tr><td>{}</td>", escape(&s.skill));
        let values: Vec<f64> = runs
            .iter()
            .map(|(_, summary)| {
                skill_rows(summary)
                    .find(|x| x.skill == s.skill)
                    .map_or(f64::NAN, |x| x.avg_reward)
            })
            .collect();
        for v in &values {
            let _ = write!(html, "<td>{}</td>", number(*v));
        }
        let change = values[values.len() - 1] - values[0];
        let class = if change > 0.0 {
            "up"
        } else if change < 0.0 {
            "down"
        } else {
            ""
        };
        let _ = write!(html, "<td class=\"{class}\">{change:+.3}</td></tr>");
    }
    html.push_str("</table>");
}

fn svg_error(e: impl std::fmt::Display) -> Error {
    Error::Report(format!("drawing a chart: {e}"))
}

/// Grouped bars of Avg@k success per skill, one colour per run.
fn bar_chart(runs: &[(String, Summary)]) -> Result<String> {
    let skills: Vec<String> = runs[0].1.skills.iter().map(|s| s.skill.clone()).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_error)?;
        let groups = skills.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption("Avg@k success per skill", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..groups, 0f64..1.05f64)
            .map_err(svg_error)?;
        let names = skills.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(skills.len().max(1) * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(svg_error)?;
        let width = 0.8 / runs.len() as f64;
        for (r, (label, summary)) in runs.iter().enumerate() {
            let colour = Palette99::pick(r).to_rgba();
            let bars = skills.iter().enumerate().filter_map(|(i, name)| {
                let s = summary.skills.iter().find(|s| &s.skill == name)?;
                let v = if s.avg_success.is_nan() {
                    0.0
                } else {
                    s.avg_success
                };
                let x0 = i as f64 + 0.1 + r as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width, v)],
                    colour.filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(svg_error)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(svg_error)?;
        root.present().map_err(svg_error)?;
    }
    Ok(svg)
}

/// A line chart of named series.
pub fn line_chart(chart_spec: &Chart) -> Result<String> {
    let points = chart_spec.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    // A flat series still gets a readable band around it.
    let pad = ((y1 - y0) * 0.05).max(0.05);
    let integer_x = chart_spec
        .series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .all(|(x, _)| x.fract() == 0.0);
    if integer_x {
        // Whole steps: half a step of room on each side, so every point sits on a labelled tick.
        x0 -= 0.5;
        x1 += 0.5;
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(svg_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&chart_spec.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(65)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(svg_error)?;
        let x_format = move |x: &f64| {
            if !integer_x {
                format!("{x:.2}")
            } else if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(chart_spec.x_label.as_str())
            .y_desc(chart_spec.y_label.as_str())
            .x_label_formatter(&x_format)
            .draw()
            .map_err(svg_error)?;
        for (i, (name, points)) in chart_spec.series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let finite: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            // Markers too, so a series of one point shows.
            chart
                .draw_series(finite.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(svg_error)?;
            chart
                .draw_series(LineSeries::new(finite, colour.stroke_width(2)))
                .map_err(svg_error)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(svg_error)?;
        root.present().map_err(svg_error)?;
    }
    Ok(svg)
}

impl Report {
    pub fn to_html(&self) -> Result<String> {
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1><p class=\"sub\">{}</p>",
            escape(&self.title),
            escape(&self.title),
            escape(&self.subtitle)
        );
        if self.runs.len() > 1 {
            html.push_str("<h2>Comparison</h2>");
            comparison_table(&mut html, &self.runs);
        }
        let mut charts = Vec::new();
        if !self.runs.is_empty() {
            charts.push(bar_chart(&self.runs)?);
        }
        for (label, summary) in &self.runs {
            let _ = write!(html, "<h2>Results: {}</h2>", escape(label));
            results_table(&mut html, summary);
            html.push_str("<h3>Outcomes</h3>");
            outcome_table(&mut html, summary);
        }
        if let Some((label, summary)) = self.runs.last() {
            if summary.k > 1 {
                charts.push(line_chart(&Chart {
                    title: format!("pass@j per skill ({label})"),
                    x_label: "j".into(),
                    y_label: "pass@j".into(),
                    series: summary
                        .skills
                        .iter()
                        .map(|s| {
                            let points = s
                                .pass_at
                                .iter()
                                .enumerate()
                                .map(|(j, p)| ((j + 1) as f64, *p))
                                .collect();
                            (s.skill.clone(), points)
                        })
                        .collect(),
                })?);
            }
        }
        for chart in &self.charts {
            charts.push(line_chart(chart)?);
        }
        if !charts.is_empty() {
            html.push_str("<h2>Charts</h2><div class=\"charts\">");
            for svg in charts {
                html.push_str("<div>");
                html.push_str(&svg);
                html.push_str("</div>");
            }
            html.push_str("</div>");
        }
        html.push_str("</body></html>\n");
        Ok(html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SkillSummary;

    fn summary(avg: f64) -> Summary {
        let skill = SkillSummary {
            skill: "review".into(),
            instances: 2,
            episodes: 6,
            scored: 6,
            avg_reward: avg,
            avg_success: avg,
            pass_at: vec![avg, avg, avg],
            ..SkillSummary::default()
        };
        Summary {
            k: 3,
            total: SkillSummary {
                skill: "all".into(),
                ..skill.clone()
            },
            skills: vec![skill],
        }
    }

    #[test]
    fn report_has_tables_charts_and_escapes_text() {
        let html = Report {
            title: "runs <a&b>".into(),
            subtitle: String::new(),
            runs: vec![
                ("before".into(), summary(0.25)),
                ("after".into(), summary(0.5)),
            ],
            charts: vec![Chart {
                title: "reward".into(),
                x_label: "step".into(),
                y_label: "mean reward".into(),
                series: vec![("review".into(), vec![(0.0, 0.0)])],
            }],
        }
        .to_html()
        .unwrap();
        assert!(html.contains("runs &lt;a&amp;b&gt;") && !html.contains("<a&b>"));
        // The comparison: 0.250 → 0.500, a change of +0.250.
        assert!(
            html.contains("<td>0.250</td><td>0.500</td><td class=\"up\">+0.250</td>"),
            "{html}"
        );
        // Bar chart, pass@j curves, the given chart; a one-point series is drawn as a marker.
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("<circle"));
    }
}
