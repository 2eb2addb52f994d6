"""Reports of judged runs: JUnit XML (for CI) and a self-contained HTML page (for people).

JUnit: one <testsuite> per scenario; test cases "data path: exactly once", "every trigger ends in
a read or a no_read event", one per vehicle, one for lanes (where the scenario wires the node's
inputs: hil.judge) and one for false reads. A vehicle that was not
read correctly is a <failure> with the reason when the scenario's plate marks (min_correct,
min_read) were missed; when they held, the scenario allows it (close-following admits one
misread), and the case passes with "allowed by [expect]" and the reason in its <system-out>, so
the JUnit failures agree with the verdict. A vehicle in view while the replay fell behind (the
machine held the node back, see hil.pace and RunResult.late_vehicles) is <skipped> with the
reason if it was not read right, and so are the missed plate/latency marks of an INCONCLUSIVE
run. The false-read, data-path and trigger cases are never skipped: lateness excuses none of them.
HTML: per scenario the figures, each vehicle's crop (from the stored read's payload), truth,
reading, confidence and latency, and a timeline of faults, triggers, reads and no-reads.
"""
from __future__ import annotations

import base64
import html
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from hil.runner import RunResult


def _case(suite: ET.Element, name: str, seconds: float, failure: str | None, output: str = "",
          not_judged: str | None = None) -> None:
    """One test case; with `not_judged` (why) a failure is reported as <skipped>, not as a <failure>."""
    case = ET.SubElement(suite, "testcase", classname=f"hil.{suite.get('name')}", name=name, time=f"{seconds:.3f}")
    if failure and not_judged:
        ET.SubElement(case, "skipped", message=f"not judged: {not_judged}"[:200]).text = f"{failure}\n{not_judged}"
    elif failure:
        ET.SubElement(case, "failure", message=failure.splitlines()[0][:200]).text = failure
    if output:
        ET.SubElement(case, "system-out").text = output


def junit_xml(results: list[RunResult], not_run: dict[str, str] | None = None) -> str:
    """JUnit XML text for the runs; `not_run` (scenario name → error) are scenarios that could not be run."""
    root = ET.Element("testsuites", name="alpr-hil")
    for r in results:
        j = r.judgement
        f = j.figures()
        suite = ET.SubElement(root, "testsuite", name=r.scenario.name, time=f"{r.wall_s:.3f}",
                              timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.started_wall_ns / 1e9)))
        props = ET.SubElement(suite, "properties")
        for key, value in f.items():
            ET.SubElement(props, "property", name=key, value=str(value))
        lags = [p.max_lag_s for p in r.pace if p.max_lag_s is not None]
        for key, value in (("verdict", r.verdict), ("real_time_limit_s", r.real_time_limit_s),
                           ("replay_max_lag_s", max(lags) if lags else None)):
            ET.SubElement(props, "property", name=key, value=str(value))
        # A run whose replay fell behind (hil.pace) judges no plate or latency mark: its vehicle
        # cases and missed marks are <skipped> with the reason, not failures of the node (an
        # INCONCLUSIVE run has missed no other mark).
        note = r.real_time_note()
        excuse = note if r.inconclusive else None
        late = r.late_vehicles() if note else set()
        allowed = r.plate_marks_met()
        e = r.scenario.expect
        d = j.data
        data_fail = None
        if d.lost or d.duplicates or d.conflicts:
            data_fail = (f"committed {d.committed}, stored {d.stored_reads} reads + {d.stored_events} events, "
                         f"dropped under quota {d.dropped}, still queued {d.still_queued}: lost {d.lost}"
                         f"{'' if d.per_seq else ' (counted: the outbox seqs were not read)'}, "
                         f"duplicates {d.duplicates}, conflicts {d.conflicts}; missing seqs {d.missing_seqs[:20]}")
        _case(suite, "data path: every committed message stored exactly once", r.wall_s, data_fail,
              f"committed {d.committed}, dropped under quota {d.dropped}, lost {d.lost}")
        unaccounted = [t for t in j.triggers if t.outcome in ("unaccounted", "suppressed as duplicate")]
        _case(suite, "every trigger ends in a read or a no_read event", 0.0,
              "; ".join(f"{t.name} at {t.t_s:.2f}s (run {t.run + 1}): no read, no no_read event"
                        f"{' (the node logged a dedup suppression)' if t.outcome != 'unaccounted' else ''}"
                        for t in unaccounted) or None, ", ".join(f"{t.name}@{t.t_s:.2f}s run {t.run + 1}: {t.outcome}" for t in j.triggers))
        for k, v in enumerate(j.vehicles):
            readings = ", ".join(f"{m.read.plate} ({m.read.confidence:.2f}, run {m.run + 1})" for m in v.matches)
            failure = None
            output = f"outcome {v.outcome}{' (' + v.excuse_text + ')' if v.excuse_text else ''}; reads: {readings or '-'}"
            if v.missed_runs and v.matches:
                output += f"; no read in run {', '.join(str(n + 1) for n in v.missed_runs)}"
            if v.excused and not v.matches:
                failure = None
            elif not v.correct:
                failure = f"{v.outcome}: truth {v.plate}, read {readings or 'nothing'}"
                if k not in late and allowed:
                    output += (f"\nallowed by [expect] min_correct = {e.min_correct:g}, min_read = {e.min_read:g} "
                               f"(the scenario's plate marks held): {failure}")
                    failure = None
            _case(suite, f"vehicle {v.plate} ({v.t_start_s:.2f}-{v.t_end_s:.2f}s)", v.latency_s or 0.0, failure,
                  output, not_judged=note if k in late else None)
        judged_lanes = [v for v in j.vehicles if v.lane is not None]
        if judged_lanes:
            # Only where the scenario wires the node's inputs ([[node.triggers]]): else no lane is known.
            _case(suite, "every read stored in its vehicle's lane", 0.0, "\n".join(j.lane_failures()) or None,
                  ", ".join(f"{v.plate}: lane {v.lane}" for v in judged_lanes))
        _case(suite, "no false reads (reads outside every vehicle's window)", 0.0,
              ("; ".join(f"{m.read.plate} ({m.read.confidence:.2f}) seq {m.read.seq}" for m in j.phantom_reads)
               or None),
              ("not judged: clip has no ground truth: " + "; ".join(
                  f"{m.read.plate} ({m.read.confidence:.2f}) seq {m.read.seq}" for m in j.unjudged_reads))
              if j.unjudged_reads else "")
        for problem in [*r.errors, *r.expectation_failures()]:
            _case(suite, f"bench: {problem[:80]}", 0.0, problem,
                  not_judged=excuse if problem in r.expectation_failures() else None)
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("errors", "0")
        suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    for name, error in (not_run or {}).items():
        # An <error>, not a <failure>: the scenario was not judged at all.
        suite = ET.SubElement(root, "testsuite", name=name, tests="1", failures="0", errors="1", skipped="0",
                              time="0.000")
        case = ET.SubElement(suite, "testcase", classname=f"hil.{name}", name="run", time="0.000")
        ET.SubElement(case, "error", message=error.splitlines()[0][:200]).text = error
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:middle}th{background:#f0f0f0}
.ok{color:#080}.bad{color:#b00;font-weight:bold}.warn{color:#a60}img.crop{max-height:48px;image-rendering:pixelated}
h2{border-bottom:2px solid #ddd;padding-bottom:3px}small{color:#666}"""

_COLOURS = {"fault": "#d33", "node": "#333", "trigger": "#36c", "read": "#2a2", "no_read": "#e90"}


def _timeline_svg(r: RunResult) -> str:
    entries = r.timeline
    if not entries:
        return ""
    t0 = min(e.wall_ns for e in entries)
    t1 = max(max(e.wall_ns, e.end_wall_ns or 0) for e in entries)
    span = max(1, t1 - t0)
    width, lanes = 900, ["fault", "node", "trigger", "read", "no_read"]
    rows = []
    for i, lane in enumerate(lanes):
        y = 20 + i * 22
        rows.append(f'<text x="0" y="{y + 4}" font-size="11">{lane}</text>')
        for e in entries:
            if e.kind != lane:
                continue
            x = 70 + (e.wall_ns - t0) / span * (width - 80)
            colour = _COLOURS.get(lane, "#666")
            tip = html.escape(f"{(e.wall_ns - t0) / 1e9:.2f}s {e.text}")
            if e.end_wall_ns:
                x2 = 70 + (e.end_wall_ns - t0) / span * (width - 80)
                rows.append(f'<rect x="{x:.1f}" y="{y - 6}" width="{max(2.0, x2 - x):.1f}" height="12" '
                            f'fill="{colour}" opacity="0.35"><title>{tip}</title></rect>')
            rows.append(f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{colour}"><title>{tip}</title></circle>')
    ticks = []
    for s in range(0, int(span / 1e9) + 1, max(1, int(span / 1e9) // 10 or 1)):
        x = 70 + s * 1e9 / span * (width - 80)
        ticks.append(f'<text x="{x:.1f}" y="{20 + len(lanes) * 22 + 6}" font-size="10">{s}s</text>')
    height = 20 + len(lanes) * 22 + 14
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(rows + ticks)}</svg>'


def _crop(data: bytes) -> str:
    if not data:
        return ""
    return f'<img class="crop" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'


def html_report(results: list[RunResult], not_run: dict[str, str] | None = None) -> str:
    """A self-contained HTML page (crops inlined) for the runs; `not_run` as in junit_xml."""
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>alpr-hil report</title>"
              f"<style>{_CSS}</style></head><body><h1>alpr-hil report</h1>"
              f"<p><small>{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</small></p>")]
    parts.append("<table><tr><th>scenario</th><th>result</th><th>vehicles</th><th>correct</th><th>missed</th>"
                 "<th>misread</th><th>duplicates</th><th>false reads</th><th>trigger&rarr;HQ median / worst (reads)</th>"
                 "<th>data lost</th><th>wall</th></tr>")
    for r in results:
        f = r.judgement.figures()
        verdict = ('<span class="ok">pass</span>' if r.passed else
                   '<span class="warn">inconclusive</span>' if r.inconclusive else '<span class="bad">FAIL</span>')
        lat = "n/a (speed 0)" if not r.judgement.latency_measured else (
            f"{f['latency_median_s']} / {f['latency_worst_s']} s" if f["latency_median_s"] is not None else "-")
        if r.judgement.latency_measured and f["trigger_to_hq_median_s"] is not None:
            lat += f"<br><small>any message: {f['trigger_to_hq_median_s']} / {f['trigger_to_hq_worst_s']} s</small>"
        parts.append(f"<tr><td><a href='#{html.escape(r.scenario.name)}'>{html.escape(r.scenario.name)}</a></td>"
                     f"<td>{verdict}</td><td>{f['vehicles']}</td><td>{f['reads_correct']}</td><td>{f['missed']}</td>"
                     f"<td>{f['misread']}</td><td>{f['duplicates']}</td><td>{f['phantom_reads']}</td><td>{lat}</td>"
                     f"<td>{f['data_lost']}</td><td>{r.wall_s:.1f}s</td></tr>")
    for name, error in (not_run or {}).items():
        parts.append(f"<tr><td>{html.escape(name)}</td><td class='bad'>not run</td>"
                     f"<td colspan='9' class='bad'>{html.escape(error)}</td></tr>")
    parts.append("</table>")
    for r in results:
        parts.append(_scenario_html(r))
    parts.append("</body></html>\n")
    return "".join(parts)


def _scenario_html(r: RunResult) -> str:
    j, s = r.judgement, r.scenario
    f = j.figures()
    d = j.data
    faults = ", ".join(f"{x.kind}@{x.at_s:g}s+{x.duration_s:g}s" for x in s.faults) or "none"
    out = [f"<h2 id='{html.escape(s.name)}'>{html.escape(s.name)}</h2>",
           (f"<p>{html.escape(s.description)}<br><small>clip {html.escape(str(r.clip.path))} "
            f"({len(r.clip)} frames, {r.clip.duration_ns / 1e9:.1f}s), speed {s.speed:g}, faults: "
            f"{html.escape(faults)}</small></p>")]
    note = r.real_time_note()
    for problem in [*r.errors, *([note] if note else []), *r.expectation_failures(), *j.lane_failures(),
                    *j.problems]:
        out.append(f"<p class='{'warn' if problem == note else 'bad'}'>{html.escape(problem)}</p>")
    lags = [p.max_lag_s for p in r.pace if p.max_lag_s is not None]
    if lags:
        out.append(f"<p><small>Real time: the node's camera read each frame at most {max(lags):.2f}s after it was "
                   f"due (limit {r.real_time_limit_s:.2f}s; frames read per node run: "
                   f"{', '.join(str(p.frames_read) for p in r.pace)})</small></p>")
    cls = "ok" if j.data_path_ok else "bad"
    out.append(f"<p class='{cls}'>Data path: committed {d.committed}; stored {d.stored_reads} reads + "
               f"{d.stored_events} events; dropped under quota {d.dropped}; still queued {d.still_queued}; "
               f"refused by the outbox (no seq) {d.refused}; "
               f"lost {d.lost}; duplicates at HQ {d.duplicates}; conflicts {d.conflicts}; "
               f"triggers {f['triggers']} ({f['triggers_unaccounted']} unaccounted, {f['triggers_without_message']} "
               f"without a message after a dedup suppression, {f['no_read_events']} no_read)</p>")
    out.append("<table><tr><th>vehicle (truth)</th><th>legible</th><th>outcome</th><th>crop</th><th>reading</th>"
               "<th>confidence</th><th>run</th><th>latency</th></tr>")
    for v in j.vehicles:
        cls = "ok" if v.correct else ("warn" if v.excused else "bad")
        label = v.outcome + (f" ({v.excuse_text})" if v.excuse_text else "")
        rows = v.matches or [None]
        for k, m in enumerate(rows):
            where = (v.trigger or "") + (f", lane {v.lane}" if v.lane is not None else "")
            head = (f"<td rowspan='{len(rows)}'>{html.escape(v.plate)}<br><small>{html.escape(where)}</small></td>"
                    f"<td rowspan='{len(rows)}'>{v.t_start_s:.2f}-{v.t_end_s:.2f}s</td>"
                    f"<td rowspan='{len(rows)}' class='{cls}'>{html.escape(label)}</td>") if k == 0 else ""
            if m is None:
                out.append(f"<tr>{head}<td></td><td>-</td><td></td><td></td><td></td></tr>")
                continue
            lat = f"{m.latency_s:.2f}s" if m.latency_s is not None else "n/a"
            out.append(f"<tr>{head}<td>{_crop(m.read.crop)}</td><td class='{'ok' if m.correct else 'bad'}'>"
                       f"{html.escape(m.read.plate)}</td><td>{m.read.confidence:.2f}</td><td>{m.run + 1}</td>"
                       f"<td>{lat}</td></tr>")
    for m in j.phantom_reads:
        out.append(f"<tr><td>(no vehicle)</td><td></td><td class='bad'>false read</td><td>{_crop(m.read.crop)}</td>"
                   f"<td>{html.escape(m.read.plate)}</td><td>{m.read.confidence:.2f}</td><td>{m.run + 1}</td><td></td></tr>")
    for m in j.unjudged_reads:
        out.append(f"<tr><td>(no ground truth)</td><td></td><td class='warn'>not judged: clip has no ground truth</td>"
                   f"<td>{_crop(m.read.crop)}</td><td>{html.escape(m.read.plate)}</td><td>{m.read.confidence:.2f}</td>"
                   f"<td>{m.run + 1}</td><td></td></tr>")
    out.append("</table>")
    out.append(_timeline_svg(r))
    out.append("<details><summary>timeline</summary><table><tr><th>t</th><th>what</th><th></th></tr>")
    t0 = min((e.wall_ns for e in r.timeline), default=0)
    for e in r.timeline:
        out.append(f"<tr><td>{(e.wall_ns - t0) / 1e9:.2f}s</td><td>{e.kind}</td><td>{html.escape(e.text)}</td></tr>")
    out.append("</table></details>")
    return "".join(out)


def write_reports(results: list[RunResult], *, junit: Path | None = None, html_path: Path | None = None,
                  not_run: dict[str, str] | None = None) -> None:
    """Write the JUnit XML and/or the HTML report; `not_run`: scenario name → why it could not be run."""
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(results, not_run), encoding="utf-8")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html_report(results, not_run), encoding="utf-8")
