//! The self-contained HTML page of `replay --report FILE.html`: inline CSS and SVG
//! charts drawn here (no script, no fonts, no network), so the file opens anywhere and
//! can be attached to a ticket. Charts: hit rate against the `prefix:N` granularity per
//! strategy (with `exact` for reference), savings by simulated strategy, the provider's
//! cached-token share per `prompt_cache_key` policy; then the full table.

use std::fmt::Write as _;

use super::{ReplayReport, SimResult};

/// Line and bar colours, cycled; readable on white and for common colour blindness
/// (Okabe–Ito).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The whole page.
pub fn render(report: &ReplayReport) -> String {
    let mut o = String::new();
    let title = format!("prefixcache replay: {}", report.input.path);
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{}</style></head><body>",
        esc(&title),
        CSS
    );
    let i = &report.input;
    let _ = writeln!(
        o,
        "<h1>{}</h1>\n<p class=\"meta\">{} requests{}{}. Provider prompt cache {}.</p>",
        esc(&title),
        i.requests,
        match (&i.first_ts, &i.last_ts) {
            (Some(a), Some(b)) => format!(", {} .. {}", esc(a), esc(b)),
            _ => String::new(),
        },
        if i.bad_lines > 0 {
            format!(", {} malformed lines skipped", i.bad_lines)
        } else {
            String::new()
        },
        if report.settings.provider_simulation {
            format!(
                "simulated ({} machines, overflow past {} requests/min, {} s idle)",
                report.settings.machines, report.settings.overflow_rpm, report.settings.idle_ttl_s
            )
        } else {
            "not simulated".to_string()
        }
    );

    o.push_str("<h2>Hit rate by granularity</h2>\n");
    o.push_str(&granularity_chart(report));
    o.push_str("<h2>Savings by strategy</h2>\n");
    o.push_str(&savings_chart(&report.overall));
    if report.settings.provider_simulation {
        o.push_str(
            "<h2>Provider cached-token share by <code>prompt_cache_key</code> policy</h2>\n",
        );
        o.push_str(&provider_chart(&report.overall));
    }
    o.push_str("<h2>All results</h2>\n");
    o.push_str("<h3>Overall</h3>\n");
    o.push_str(&table(&report.overall, report.settings.provider_simulation));
    for g in &report.groups {
        let _ = writeln!(
            o,
            "<h3>Strategy {} <span class=\"meta\">({} requests, prompt_cache_key = {})</span></h3>",
            esc(&g.name),
            g.requests,
            esc(&g.prompt_cache_key)
        );
        o.push_str(&table(&g.results, report.settings.provider_simulation));
    }
    o.push_str(
        "<p class=\"meta\">Definitions: docs/analysis.md in the prefixcache repository. \
         Hits are requests saved; dollars use the pricing table and the simulated provider \
         discount under each strategy's prompt_cache_key policy.</p>\n</body></html>\n",
    );
    o
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}\
h1{font-size:20px}h2{font-size:17px;margin-top:28px}h3{font-size:15px}\
.meta{color:#666;font-weight:normal}\
table{border-collapse:collapse;margin:8px 0 16px;font-variant-numeric:tabular-nums}\
th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}\
svg{display:block;max-width:100%;height:auto}svg text{font:12px system-ui,sans-serif;fill:#333}\
.axis{stroke:#888}.grid{stroke:#eee}";

fn svg_open(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\">\n"
    )
}

/// Hit rate (y) against `prefix:N` (x, log scale when N spans a wide range): one line per
/// strategy and the overall, each with its `exact` rate as a dashed line.
fn granularity_chart(report: &ReplayReport) -> String {
    let mut grains: Vec<usize> = report
        .overall
        .iter()
        .filter(|r| r.kind == "prefix" && is_plain(r))
        .filter_map(|r| r.granularity)
        .collect();
    grains.sort_unstable();
    grains.dedup();
    if grains.is_empty() {
        return "<p class=\"meta\">No <code>prefix:N</code> spec was replayed.</p>\n".to_string();
    }
    let (lo, hi) = (grains[0] as f64, grains[grains.len() - 1] as f64);
    let log = hi / lo.max(1.0) > 8.0;
    let xf = |g: f64| -> f64 {
        let w = WIDTH - LEFT - RIGHT;
        if (hi - lo).abs() < f64::EPSILON {
            return LEFT + w / 2.0;
        }
        let t = if log {
            (g.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (g - lo) / (hi - lo)
        };
        LEFT + t * w
    };
    let yf = |rate: f64| TOP + (1.0 - rate.clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM);
    let mut o = svg_open(HEIGHT);
    for k in 0..=4 {
        let r = k as f64 / 4.0;
        let y = yf(r);
        let _ = writeln!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            r * 100.0
        );
    }
    for &g in &grains {
        let x = xf(g as f64);
        let _ = writeln!(
            o,
            "<line class=\"axis\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{g}</text>",
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 5.0,
            HEIGHT - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">prefix:N granularity (tokens{})</text>",
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        if log { ", log scale" } else { "" }
    );
    let mut series: Vec<(&str, &[SimResult])> = vec![("overall", &report.overall)];
    for g in &report.groups {
        series.push((g.name.as_str(), &g.results));
    }
    for (si, (name, rows)) in series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        let width = if si == 0 { 3.0 } else { 1.8 };
        let points: Vec<String> = grains
            .iter()
            .filter_map(|&g| {
                rows.iter()
                    .find(|r| r.granularity == Some(g) && is_plain(r))
                    .map(|r| format!("{:.1},{:.1}", xf(g as f64), yf(r.hit_rate)))
            })
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(name)
        );
        for pt in &points {
            if let Some((x, y)) = pt.split_once(',') {
                let _ = writeln!(
                    o,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>"
                );
            }
        }
        if let Some(exact) = rows.iter().find(|r| r.kind == "exact" && is_plain(r)) {
            let y = yf(exact.hit_rate);
            let _ = writeln!(
                o,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-dasharray=\"5 4\" stroke-width=\"1.2\"><title>{} exact {:.1}%</title></line>",
                WIDTH - RIGHT,
                esc(name),
                exact.hit_rate * 100.0
            );
        }
        let ly = TOP + 8.0 + si as f64 * 18.0;
        let lx = WIDTH - RIGHT + 14.0;
        let _ = writeln!(
            o,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"{width}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            esc(&truncate(name, 22))
        );
    }
    let ly = TOP + 8.0 + series.len() as f64 * 18.0;
    let lx = WIDTH - RIGHT + 14.0;
    let _ = writeln!(
        o,
        "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"#555\" stroke-dasharray=\"5 4\"/><text x=\"{:.1}\" y=\"{:.1}\">exact (same colour)</text>",
        lx + 18.0,
        lx + 24.0,
        ly + 4.0
    );
    o.push_str("</svg>\n");
    o
}

/// Specs without TTL or capacity options: the ones the granularity chart compares.
fn is_plain(r: &SimResult) -> bool {
    !r.strategy.contains(',')
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}

/// Horizontal bars: dollars saved per spec (tokens saved when no request had a price).
fn savings_chart(rows: &[SimResult]) -> String {
    let dollars = rows.iter().any(|r| r.usd_saved > 0.0 || r.usd_spent > 0.0);
    let value = |r: &SimResult| {
        if dollars {
            r.usd_saved
        } else {
            r.tokens_saved as f64
        }
    };
    let max = rows.iter().map(value).fold(0.0f64, f64::max);
    let bar_h = 22.0;
    let height = TOP + rows.len() as f64 * (bar_h + 8.0) + 30.0;
    let label_w = 200.0;
    // Room right of the longest bar for its label.
    let w = WIDTH - label_w - 250.0;
    let mut o = svg_open(height);
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (bar_h + 8.0);
        let len = if max > 0.0 { value(r) / max * w } else { 0.0 };
        let shown = if dollars {
            format!(
                "{} saved, {:.1}% hits",
                usd(r.usd_saved),
                r.hit_rate * 100.0
            )
        } else {
            format!(
                "{} tokens saved, {:.1}% hits",
                r.tokens_saved,
                r.hit_rate * 100.0
            )
        };
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"{bar_h}\" fill=\"{}\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w - 8.0,
            y + 15.0,
            esc(&truncate(&r.strategy, 28)),
            PALETTE[i % PALETTE.len()],
            esc(&shown),
            label_w + len + 6.0,
            y + 15.0,
            esc(&shown)
        );
    }
    let _ = writeln!(
        o,
        "<text x=\"{label_w}\" y=\"{:.1}\">{}</text>\n</svg>",
        height - 8.0,
        if dollars {
            "US dollars saved (the cost of the calls the hits did not repeat)"
        } else {
            "tokens saved (no request had a price)"
        }
    );
    o
}

/// Dollars with cents, or four decimals under a dollar (small samples).
fn usd(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// Grouped bars: per spec, the cached share of forwarded prompt tokens under `off`,
/// `conversation`, `family`, `auto`, and `auto` with the proxy's breakpoints.
fn provider_chart(rows: &[SimResult]) -> String {
    let group_h = 5.0 * 14.0 + 12.0;
    let height = TOP + rows.len() as f64 * group_h + 40.0;
    let label_w = 200.0;
    let w = WIDTH - label_w - 120.0;
    let mut o = svg_open(height);
    let names = [
        "off",
        "conversation",
        "family",
        "auto",
        "auto + breakpoints",
    ];
    for (i, r) in rows.iter().enumerate() {
        let Some(p) = &r.provider else { continue };
        let y0 = TOP + i as f64 * group_h;
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y0 + 25.0,
            esc(&truncate(&r.strategy, 28))
        );
        for (k, share) in [
            p.off.cached_share,
            p.conversation.cached_share,
            p.family.cached_share,
            p.auto.cached_share,
            p.breakpoints_auto.auto.cached_share,
        ]
        .into_iter()
        .enumerate()
        {
            let y = y0 + k as f64 * 14.0;
            let len = share.clamp(0.0, 1.0) * w;
            let _ = writeln!(
                o,
                "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"12\" fill=\"{}\"><title>{} {}: {:.1}%</title></rect><text x=\"{:.1}\" y=\"{:.1}\">{:.1}%</text>",
                PALETTE[k],
                esc(&r.strategy),
                names[k],
                share * 100.0,
                label_w + len + 6.0,
                y + 10.0,
                share * 100.0
            );
        }
    }
    let ly = height - 14.0;
    for (k, n) in names.iter().enumerate() {
        let x = label_w + k as f64 * 130.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{n}</text>",
            ly - 10.0,
            PALETTE[k],
            x + 16.0
        );
    }
    o.push_str("</svg>\n");
    o
}

fn table(rows: &[SimResult], provider: bool) -> String {
    let mut o = String::from(
        "<table><tr><th>strategy</th><th>requests</th><th>hits</th><th>hit rate</th><th>tokens saved</th><th>$ spent</th><th>$ saved</th>",
    );
    if provider {
        o.push_str("<th>cached share off</th><th>conversation</th><th>family</th><th>auto</th><th>auto + breakpoints</th><th>$ auto + breakpoints</th>");
    }
    o.push_str("</tr>\n");
    for r in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{:.4}</td><td>{:.4}</td>",
            esc(&r.strategy),
            r.requests,
            r.hits,
            r.hit_rate * 100.0,
            r.tokens_saved,
            r.usd_spent,
            r.usd_saved
        );
        if let Some(p) = &r.provider {
            let _ = write!(
                o,
                "<td>{:.1}%</td><td>{:.1}%</td><td>{:.1}%</td><td>{:.1}%</td><td>{:.1}%</td><td>{:.4}</td>",
                p.off.cached_share * 100.0,
                p.conversation.cached_share * 100.0,
                p.family.cached_share * 100.0,
                p.auto.cached_share * 100.0,
                p.breakpoints_auto.auto.cached_share * 100.0,
                p.breakpoints_auto.auto.usd_spent
            );
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
