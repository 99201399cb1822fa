//! Drawing: a pure function of the [`App`]. Tabs across the top, the pane, a
//! status line of keys at the bottom, the help overlay over everything.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, Tabs, Wrap};

use super::app::{App, Editing, Pane};
use harness::backend::RunId;
use harness::engine::{Endpoint, Status};
use harness::logs::{level_of, render_log};

const KEYS: &[(&str, &str)] = &[
    ("Tab / ← →, 1-7", "switch pane"),
    ("↑ ↓ / k j", "move, scroll"),
    ("?", "this help; any key closes it"),
    ("q, Ctrl-C", "quit (tears down only a sandbox started here)"),
    ("Services: r", "restart (or start) the component"),
    ("Services: s", "stop the component"),
    ("Services: Enter, l", "its logs"),
    ("Logs: /", "filter by text (Enter keeps, Esc clears)"),
    ("Logs: f, Space", "follow or pause"),
    ("Logs: a", "all components, interleaved"),
    ("Logs: L", "minimum level: all, INFO, WARN, ERROR"),
    ("Logs, Events: G", "back to the newest"),
    ("Events: /", "filter by topic, type, key, trace id or text"),
    ("Providers: u s x", "fault: unavailable, slow (every request), reject the next"),
    ("Providers: c", "clear the provider's faults"),
    ("Explorer: Enter", "follow the link, or fill in the action's form"),
    ("Explorer: Backspace, h", "back; g: the front door again"),
    ("Events: Enter", "follow the newest event in view by its trace id"),
    ("Follow: /", "an id to follow: payment, account, trace, scheme id…"),
    ("Scenarios: Enter, a", "run the feature, or all, against this sandbox"),
];

pub fn draw(app: &App, f: &mut Frame) {
    let [top, body, bottom] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    // Numbered (the keys that pick them) where there is room.
    let numbered = f.area().width >= 100;
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(if numbered { format!("{} {}", i + 1, p.title()) } else { p.title().to_string() }))
        .collect();
    let selected = Pane::ALL.iter().position(|p| *p == app.pane).unwrap_or(0);
    let phase = app.state.as_ref().map_or("connecting".to_string(), |s| format!("{:?}", s.phase).to_lowercase());
    let name = format!("{} {phase}{}", app.sandbox, if app.owned { "" } else { " (attached)" });
    let [tabs_area, name_area] =
        Layout::horizontal([Constraint::Min(20), Constraint::Length(name.chars().count() as u16 + 1)]).areas(top);
    let tabs = Tabs::new(titles).select(selected).highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    // Narrow: no padding, a plain space between, so all seven fit in 80 columns.
    let tabs = if numbered { tabs } else { tabs.padding("", "").divider(" ") };
    f.render_widget(tabs, tabs_area);
    f.render_widget(Paragraph::new(name).right_aligned().style(Style::new().fg(Color::Cyan)), name_area);
    match app.pane {
        Pane::Services => services(app, f, body),
        Pane::Logs => logs(app, f, body),
        Pane::Events => events(app, f, body),
        Pane::Providers => providers(app, f, body),
        Pane::Explorer => explorer(app, f, body),
        Pane::Follow => follow(app, f, body),
        Pane::Scenarios => scenarios(app, f, body),
    }
    let status = match (&app.editing, &app.note) {
        (Some(Editing::LogFilter), _) => format!("filter logs: {}▏", app.log_filter),
        (Some(Editing::EventFilter), _) => format!("filter events: {}▏", app.event_filter),
        (Some(Editing::FollowId), _) => format!("follow: {}▏", app.follow_id),
        (None, Some(note)) => note.clone(),
        (None, None) => hint(app.pane).to_string(),
    };
    f.render_widget(Paragraph::new(status).style(Style::new().fg(Color::DarkGray)), bottom);
    if app.help {
        help(f);
    }
}

fn hint(pane: Pane) -> &'static str {
    match pane {
        Pane::Services => "r restart  s stop  Enter logs  ? help  q quit",
        Pane::Logs => "/ filter  f follow/pause  a all  L level  G newest  ? help  q quit",
        Pane::Events => "/ filter  ↑↓ scroll  Enter follow its trace  G newest  ? help  q quit",
        Pane::Providers => "u unavailable  s slow  x reject next  c clear  ? help  q quit",
        Pane::Explorer => "Enter follow / act  Backspace back  g front door  ? help  q quit",
        Pane::Follow => "/ the id to follow  ? help  q quit",
        Pane::Scenarios => "Enter run the feature  a run all  K J scroll the output  ? help  q quit",
    }
}

fn scenarios(app: &App, f: &mut Frame, area: Rect) {
    let [left, right] = Layout::horizontal([Constraint::Length(34), Constraint::Min(20)]).areas(area);
    let items: Vec<ListItem> =
        app.features.iter().map(|ft| ListItem::new(format!("{} ({})", ft.name, ft.scenarios.len()))).collect();
    let mut ls = ListState::default().with_selected((!app.features.is_empty()).then_some(app.feature_selected));
    f.render_stateful_widget(
        List::new(items).block(block("Features")).highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        left,
        &mut ls,
    );
    let height = right.height.saturating_sub(1) as usize;
    let lines: Vec<Line> = window(app.run_output.iter().collect(), height, app.run_scroll)
        .into_iter()
        .map(|l| {
            let color = if l.contains('✘') || l.contains("failed") && !l.contains(" 0 failed") {
                Color::Red
            } else if l.contains('✔') {
                Color::Green
            } else {
                Color::Reset
            };
            Line::styled(l.clone(), Style::new().fg(color))
        })
        .collect();
    let title = match (app.running, app.run_passed) {
        (true, _) => "Run: going on…".to_string(),
        (false, Some(true)) => "Run: passed".to_string(),
        (false, Some(false)) => "Run: FAILED (the trail of each failure is in the output)".to_string(),
        (false, None) => {
            let selected = app.features.get(app.feature_selected);
            selected.map_or("Scenarios".to_string(), |ft| format!("{}: {}", ft.name, ft.scenarios.join(" · ")))
        }
    };
    f.render_widget(Paragraph::new(lines).block(block(&title)), right);
}

fn follow(app: &App, f: &mut Frame, area: Rect) {
    if app.follow_id.trim().is_empty() {
        let text = "Type / and an id (a payment, an account, a trace id, a scheme id) to see everything \
                    about it across logs, events and provider traffic, oldest first; or press Enter on an event.";
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(block("Follow")), area);
        return;
    }
    let timeline = app.timeline();
    let height = area.height.saturating_sub(1) as usize;
    let items: Vec<ListItem> = window(timeline.iter().collect(), height, 0)
        .into_iter()
        .map(|s| {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(s.at) * 1_000_000)
                .map(|t| format!("{:02}:{:02}:{:02}.{:03}", t.hour(), t.minute(), t.second(), t.millisecond()))
                .unwrap_or_default();
            ListItem::new(Line::from(vec![
                Span::styled(format!("{t} "), Style::new().fg(Color::DarkGray)),
                Span::styled(format!("{:<24} ", s.source), Style::new().fg(Color::Cyan)),
                Span::raw(s.text.clone()),
            ]))
        })
        .collect();
    let title = format!("Follow `{}`: {} sightings", app.follow_id.trim(), timeline.len());
    f.render_widget(List::new(items).block(block(&title)), area);
}

fn services(app: &App, f: &mut Frame, area: Rect) {
    let Some(state) = &app.state else {
        f.render_widget(Paragraph::new("waiting for the sandbox's state…").block(block("Services")), area);
        return;
    };
    // As wide as the longest id (a pid, a container's short id), at least the header's.
    let id_width =
        state.components.iter().filter_map(|c| c.id.as_ref()).map(|i| i.short().len()).max().unwrap_or(0).max(2) as u16;
    // The URL column as wide as the longest URL: it shrinks first when the
    // terminal is narrow, and DETAIL takes what is left.
    let url_width = state
        .components
        .iter()
        .filter_map(|c| c.endpoints.first())
        .map(|e| e.shown().chars().count())
        .max()
        .unwrap_or(0)
        .max(3) as u16;
    let rows = state.components.iter().map(|c| {
        let color = match c.status {
            Status::Healthy => Color::Green,
            Status::Starting | Status::Waiting | Status::Stopping => Color::Yellow,
            Status::Stopped => Color::DarkGray,
            Status::Exited { .. } | Status::Failed { .. } => Color::Red,
        };
        let detail = match &c.status {
            Status::Failed { reason } => reason.lines().next().unwrap_or_default().to_string(),
            Status::Exited { code } => code.map_or("killed by a signal".into(), |c| format!("exit code {c}")),
            _ => c.last_probe.clone().unwrap_or_default(),
        };
        Row::new(vec![
            Cell::from(c.name.clone()),
            Cell::from(c.status.label()).style(Style::new().fg(color)),
            Cell::from(c.id.as_ref().map_or("-".into(), RunId::short)),
            Cell::from(c.restarts.to_string()),
            Cell::from(c.endpoints.first().map(Endpoint::shown).unwrap_or_default()),
            Cell::from(match (&c.id, c.started_at) {
                (Some(_), Some(at)) => uptime(app.now.saturating_sub(at)),
                _ => "-".into(),
            }),
            Cell::from(detail),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(id_width),
            Constraint::Length(8),
            Constraint::Max(url_width),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["COMPONENT", "STATUS", "ID", "RESTARTS", "URL", "UP", "DETAIL"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .block(block("Services"));
    let mut ts = ratatui::widgets::TableState::default().with_selected(Some(app.selected));
    f.render_stateful_widget(table, area, &mut ts);
}

/// `45s`, `3m12s`, `2h05m`.
fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn block(title: &str) -> Block<'_> {
    Block::new().borders(Borders::TOP).title(title)
}

/// The last `height` items of `matching` (in order), `scroll` up from the end.
fn window<T>(matching: Vec<T>, height: usize, scroll: usize) -> Vec<T> {
    let end = matching.len().saturating_sub(scroll.min(matching.len().saturating_sub(height.min(matching.len()))));
    let start = end.saturating_sub(height);
    matching.into_iter().skip(start).take(end - start).collect()
}

fn logs(app: &App, f: &mut Frame, area: Rect) {
    let height = area.height.saturating_sub(1) as usize;
    // From the newest back, only as many as show: the cost of a frame does not
    // grow with the 10,000 lines kept.
    let mut shown: Vec<_> =
        app.logs.iter().rev().filter(|l| app.log_matches(l)).skip(app.log_scroll).take(height).collect();
    shown.reverse();
    let total = app.logs.len();
    let width = app.state.as_ref().map_or(10, |s| s.components.iter().map(|c| c.name.len()).max().unwrap_or(10));
    let items: Vec<ListItem> = shown
        .iter()
        .map(|l| {
            let color = match level_of(&l.text) {
                3 => Color::Red,
                2 => Color::Yellow,
                _ => Color::Reset,
            };
            ListItem::new(Line::from(vec![
                Span::styled(format!("{:<width$} ", l.component), Style::new().fg(Color::Cyan)),
                Span::styled(render_log(&l.text), Style::new().fg(color)),
            ]))
        })
        .collect();
    let title = format!(
        "Logs: {} · {} · level {} · {total} kept{}",
        app.log_source.as_deref().unwrap_or("all"),
        if app.follow { "following" } else { "paused" },
        ["all", "INFO+", "WARN+", "ERROR"][app.log_level as usize],
        if app.log_filter.is_empty() { String::new() } else { format!(" matching `{}`", app.log_filter) },
    );
    f.render_widget(List::new(items).block(block(&title)), area);
}

fn events(app: &App, f: &mut Frame, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let mut shown: Vec<_> =
        app.events.iter().rev().filter(|e| app.event_matches(e)).skip(app.event_scroll).take(height).collect();
    shown.reverse();
    let total = app.events.len();
    let rows = shown.into_iter().map(|e| {
        Row::new(vec![
            Cell::from(format!("{}@{}", e.topic, e.offset)),
            Cell::from(e.kind.clone()).style(Style::new().fg(Color::Green)),
            Cell::from(e.key.chars().take(12).collect::<String>()),
            Cell::from(e.trace_id.chars().take(8).collect::<String>()),
            Cell::from(e.summary.clone()),
        ])
    });
    let title = format!(
        "Events: {total} kept{}",
        if app.event_filter.is_empty() { String::new() } else { format!(" matching `{}`", app.event_filter) }
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(20),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["TOPIC@OFFSET", "TYPE", "KEY", "TRACE", "DATA"]).style(Style::new().add_modifier(Modifier::BOLD)))
    .block(block(&title));
    f.render_widget(table, area);
}

fn providers(app: &App, f: &mut Frame, area: Rect) {
    let [left, right] = Layout::horizontal([Constraint::Length(22), Constraint::Min(20)]).areas(area);
    let items: Vec<ListItem> = app
        .providers
        .iter()
        .map(|p| {
            let faults = if p.faults.is_empty() { String::new() } else { format!(" ⚠{}", p.faults.len()) };
            ListItem::new(format!("{}{faults}", p.name))
        })
        .collect();
    let mut ls = ListState::default().with_selected((!app.providers.is_empty()).then_some(app.provider_selected));
    f.render_stateful_widget(
        List::new(items).block(block("Providers")).highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        left,
        &mut ls,
    );
    let Some(p) = app.providers.get(app.provider_selected) else {
        f.render_widget(Paragraph::new("reading the providers' journals…").block(block("Journal")), right);
        return;
    };
    let mut lines: Vec<Line> = p
        .faults
        .iter()
        .map(|fault| {
            Line::styled(
                format!(
                    "fault #{} {:?}{}{}",
                    fault.id,
                    fault.kind,
                    fault.scope.as_ref().map(|s| format!(" for {s}")).unwrap_or_else(|| " for every request".into()),
                    fault.remaining.map(|n| format!(", {n} left")).unwrap_or_default()
                ),
                Style::new().fg(Color::Yellow),
            )
        })
        .collect();
    let height = right.height.saturating_sub(1) as usize;
    for e in p.journal.iter().rev().take(height.saturating_sub(lines.len())) {
        let color = if (200..300).contains(&e.status) { Color::Reset } else { Color::Red };
        lines.push(Line::styled(e.summary(), Style::new().fg(color)));
    }
    let title = format!("{}: {} requests and webhooks, newest first", p.name, p.journal.len());
    f.render_widget(Paragraph::new(lines).block(block(&title)), right);
}

fn explorer(app: &App, f: &mut Frame, area: Rect) {
    let [left, right] = Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(area);
    let Some((url, resource)) = app.explorer.last() else {
        f.render_widget(Paragraph::new("opening the gateway's front door…").block(block("Explorer")), area);
        return;
    };
    let items: Vec<ListItem> = app
        .links()
        .into_iter()
        .map(|(rel, href, method)| {
            let style =
                if method == "GET" && !href.contains('{') { Style::new() } else { Style::new().fg(Color::DarkGray) };
            ListItem::new(format!("{rel} {}", if method == "GET" { String::new() } else { format!("({method})") }))
                .style(style)
        })
        .collect();
    let mut ls = ListState::default().with_selected(Some(app.link_selected));
    let depth = format!("Links ({} deep)", app.explorer.len());
    f.render_stateful_widget(
        List::new(items).block(block(&depth)).highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        left,
        &mut ls,
    );
    let mut shown = resource.clone();
    if let Some(m) = shown.as_object_mut() {
        m.remove("_links");
    }
    let json = serde_json::to_string_pretty(&shown).unwrap_or_default();
    f.render_widget(Paragraph::new(json).wrap(Wrap { trim: false }).block(block(url)), right);
    if let Some(form) = &app.form {
        let height = (area.height / 2).max(5);
        let popup = Rect { x: area.x, y: area.y + area.height - height, width: area.width, height };
        let title =
            format!("{} {} ({}): ↑↓ field, Enter checks and sends, Esc cancels", form.method, form.href, form.rel);
        let mut lines: Vec<Line> = Vec::new();
        if form.request.fields.is_empty() {
            lines.push(Line::raw("This action takes no body: Enter sends it."));
        }
        let width = form.request.fields.iter().map(|f| f.name.len() + 1).max().unwrap_or(0);
        for (i, field) in form.request.fields.iter().enumerate() {
            let selected = i == form.selected;
            let name = format!("{}{}", field.name, if field.required { "*" } else { "" });
            let value = if selected { format!("{}▏", field.value) } else { field.value.clone() };
            let hint = [field.rules.as_str(), field.description.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" · ");
            let style = if selected { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
            lines.push(Line::from(vec![
                Span::styled(format!("{name:<width$} "), Style::new().fg(Color::Cyan)),
                Span::styled(value, style),
                Span::styled(format!("  {hint}"), Style::new().fg(Color::DarkGray)),
            ]));
        }
        for error in &form.errors {
            lines.push(Line::styled(format!("✗ {error}"), Style::new().fg(Color::Red)));
        }
        f.render_widget(Clear, popup);
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).block(Block::bordered().title(title)), popup);
    }
}

fn help(f: &mut Frame) {
    let area = f.area();
    // As wide as the longest line (and its border), or the whole terminal;
    // narrower than a line, the line wraps rather than being cut.
    let longest = KEYS.iter().map(|(_, what)| 24 + what.chars().count()).max().unwrap_or(0) as u16;
    let width = area.width.min(longest + 2);
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows: u16 = KEYS.iter().map(|(_, what)| (24 + what.chars().count()).div_ceil(inner) as u16).sum();
    let height = area.height.min(rows + 2);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::styled(format!("{k:<24}"), Style::new().fg(Color::Cyan)), Span::raw(*what)])
        })
        .collect();
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }).block(Block::bordered().title("Keys")),
        popup,
    );
}
