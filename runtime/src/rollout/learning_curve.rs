//! A run's learning curve: `metrics.jsonl` (one JSON object per policy version, appended and
//! flushed as each version is made, so it is readable while the job runs) and `reward.svg`
//! (mean reward per version, drawn with `plotters` when the job ends).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metrics file's name in the run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The picture's name in the run directory.
pub const PICTURE_FILE: &str = "reward.svg";

/// The learning curve being written into a run directory.
#[derive(Debug)]
pub struct LearningCurve {
    dir: PathBuf,
    file: std::fs::File,
    points: Vec<(u64, f64)>,
}

impl LearningCurve {
    /// Creates `dir` (and parents) and an empty `metrics.jsonl` in it (replacing one there).
    pub fn create(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the run directory {}: {e}", dir.display()))?;
        let path = dir.join(METRICS_FILE);
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(LearningCurve {
            dir: dir.to_path_buf(),
            file,
            points: Vec::new(),
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one version's object (it must have `version` and `mean_reward`).
    pub fn record(&mut self, line: &Value) -> Result<(), String> {
        if let (Some(v), Some(r)) = (
            line.get("version").and_then(Value::as_u64),
            line.get("mean_reward").and_then(Value::as_f64),
        ) {
            self.points.push((v, r));
        }
        let mut text = line.to_string();
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("writing {}: {e}", self.dir.join(METRICS_FILE).display()))
    }

    /// Versions recorded, with their mean reward.
    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }

    /// Draws `reward.svg` from the versions recorded so far; returns its path.
    pub fn draw(&self, title: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(PICTURE_FILE);
        draw_reward_curve(&path, title, &self.points)?;
        Ok(path)
    }
}

/// Draws mean reward per version (and its moving average over a tenth of the run) as an SVG.
pub fn draw_reward_curve(path: &Path, title: &str, points: &[(u64, f64)]) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let max_v = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let min_v = points.iter().map(|p| p.0).min().unwrap_or(0).min(max_v - 1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(min_v..max_v, 0.0f64..1.0f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("policy version")
        .y_desc("mean reward")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), BLUE.mix(0.5)))
        .map_err(|e| err(&e))?
        .label("mean reward of the version's batch")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(
            points
                .iter()
                .map(|&(v, r)| Circle::new((v, r), 3, BLUE.filled())),
        )
        .map_err(|e| err(&e))?;
    let w = (points.len() / 10).max(1);
    let avg: Vec<(u64, f64)> = (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let s: f64 = points[lo..=i].iter().map(|p| p.1).sum();
            (points[i].0, s / (i - lo + 1) as f64)
        })
        .collect();
    chart
        .draw_series(LineSeries::new(avg, RED.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label(format!("moving average over {w} versions"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_is_a_line_and_the_picture_is_an_svg_with_the_curve() {
        let d = std::env::temp_dir().join(format!("fleet-curve-{}", std::process::id()));
        let mut c = LearningCurve::create(&d).unwrap();
        for v in 1..=12u64 {
            c.record(
                &serde_json::json!({"version": v, "mean_reward": v as f64 / 20.0, "episodes": 64}),
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(d.join(METRICS_FILE)).unwrap();
        assert_eq!(text.lines().count(), 12);
        let p = c.draw("test").unwrap();
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(
            svg.contains("polyline") || svg.contains("<path"),
            "no curve drawn"
        );
        assert!(svg.contains("mean reward"));
        let _ = std::fs::remove_dir_all(d);
    }
}
