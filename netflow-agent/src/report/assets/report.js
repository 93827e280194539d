// netflow's report page: draws the graph embedded in #netflow-data on a
// canvas (namespaces as groups, nodes in a grid inside each) and lists the
// same as tables. Filters: namespace, search text, "new or rare" and
// "findings", also read from the URL hash (#ns=shop&q=web&only=findings)
// so a link (or a test) opens the page filtered.
"use strict";
(function () {
  const started = performance.now();
  const data = JSON.parse(document.getElementById("netflow-data").textContent);
  const nodes = data.nodes;
  const edges = data.edges;
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // ---- layout: groups in rows, nodes in a grid inside each group ----
  const NODE_W = 170, NODE_H = 34, GAP = 14, PAD = 28, MAX_W = 2400;
  const groups = new Map();
  nodes.forEach((node, index) => {
    if (!groups.has(node.group)) groups.set(node.group, []);
    groups.get(node.group).push(index);
  });
  const groupNames = [...groups.keys()].sort((a, b) =>
    a === "outside the cluster" ? 1 : b === "outside the cluster" ? -1 : a.localeCompare(b));
  const boxes = new Map();
  const place = new Array(nodes.length);
  let x = GAP, y = GAP, rowHeight = 0, width = 0;
  for (const name of groupNames) {
    const members = groups.get(name);
    const columns = Math.max(1, Math.ceil(Math.sqrt(members.length)));
    const rows = Math.ceil(members.length / columns);
    const w = PAD + columns * (NODE_W + GAP), h = PAD + 10 + rows * (NODE_H + GAP);
    if (x + w > MAX_W && x > GAP) { x = GAP; y += rowHeight + GAP; rowHeight = 0; }
    boxes.set(name, { x, y, w, h });
    members.forEach((index, i) => {
      place[index] = {
        x: x + PAD / 2 + (i % columns) * (NODE_W + GAP),
        y: y + PAD + Math.floor(i / columns) * (NODE_H + GAP),
      };
    });
    x += w + GAP; rowHeight = Math.max(rowHeight, h); width = Math.max(width, x);
  }
  const height = y + rowHeight + GAP;

  // ---- page skeleton ----
  document.title = data.title;
  const header = el("header");
  header.append(el("h1", {}, data.title));
  const summary = el("p", { id: "summary" });
  header.append(summary);
  const controls = el("div", { class: "controls", role: "search" });
  const nsSelect = el("select", { id: "namespace", "aria-label": "namespace" });
  nsSelect.append(el("option", { value: "" }, "all namespaces"));
  for (const name of groupNames) nsSelect.append(el("option", { value: name }, name));
  const search = el("input", { id: "search", type: "search", placeholder: "search names, ports, calls", "aria-label": "search" });
  const only = el("select", { id: "only", "aria-label": "show" });
  for (const [value, text] of [["", "every edge"], ["new-rare", "new or rare edges"], ["findings", "findings and blocked edges"]])
    only.append(el("option", { value }, text));
  controls.append(nsSelect, search, only);
  header.append(controls);
  document.body.append(header);

  const main = el("main");
  const picture = el("div", { id: "picture", role: "img", "aria-label": "the communication graph; the same is listed below as text" });
  const canvas = el("canvas", { id: "graph" });
  picture.append(canvas);
  const legend = el("div", { id: "legend" });
  const kinds = data.review ? [["allowed", "allowed"], ["blocked", "blocked"], ["new", "new"]] : [["observed", "observed"], ["new", "new"]];
  for (const [key, text] of kinds) legend.append(el("span", { class: "k-" + key }, text));
  main.append(picture, legend);

  // ---- the lists (the page reads without the picture) ----
  // Rows are HTML text, escaped, put in place a page at a time: a table of
  // 20 000 rows costs the browser seconds of layout; the filters and the
  // search narrow the list, and "show all" lifts the limit.
  const PAGE = 1000;
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const cells = (values) => values.map(([text, cls]) =>
    "<td" + (cls ? ' class="' + cls + '"' : "") + ">" + esc(text) + "</td>").join("");
  const nodeSection = el("section", { id: "workloads" });
  nodeSection.append(el("h2", {}, "Workloads and other ends"));
  const nodeTable = el("table", { id: "node-list" });
  nodeTable.append(headRow(["name", "kind", "group", "replicas", "findings"]));
  const nodeBody = el("tbody");
  nodeTable.append(nodeBody);
  const nodeMore = el("p", { class: "more" });
  nodeSection.append(nodeTable, nodeMore);
  const nodeHtml = nodes.map((node) =>
    '<tr data-group="' + esc(node.group) + '">' +
    cells([[node.label], [node.workload_kind || node.kind], [node.group],
      [node.replicas === undefined ? "" : String(node.replicas)]]) +
    "<td>" + node.flags.map((flag) => '<span class="flag">' + esc(flag) + "</span>").join("") + "</td></tr>");

  const edgeSection = el("section", { id: "edges" });
  edgeSection.append(el("h2", {}, "Edges (client to server, on the server's port)"));
  const edgeTable = el("table", { id: "edge-list" });
  edgeTable.append(headRow(["client", "server", "port", "connections", "first seen", "last seen", "calls", "status", "why", "notes"]));
  const edgeBody = el("tbody");
  edgeTable.append(edgeBody);
  const edgeMore = el("p", { class: "more" });
  edgeSection.append(edgeTable, edgeMore);
  const findingEdge = (edge) => edge.status === "blocked" || nodes[edge.to].kind === "metadata" ||
    nodes[edge.from].flags.length > 0 || edge.status === "never-connected";
  const edgeText = edges.map((edge) => [nodes[edge.from].label, nodes[edge.to].label,
    edge.protocol + "/" + edge.port, ...edge.calls.map((c) => c.method + " " + c.path)].join(" ").toLowerCase());
  const edgeHtml = edges.map((edge) => {
    const classes = [edge.status];
    if (edge.new) classes.push("new");
    if (edge.rare) classes.push("rare");
    const calls = edge.calls.map((c) => c.method + " " + c.path + " (" + c.requests + ")").join("\n");
    const notes = [edge.new ? "new" : "", edge.rare ? "rare" : ""].filter(Boolean).join(", ");
    return '<tr class="' + classes.join(" ") + '" data-status="' + esc(edge.status) + '">' + cells([
      [nodes[edge.from].label], [nodes[edge.to].label], [edge.protocol + "/" + edge.port],
      [edge.connections + (edge.established < edge.connections ? " (" + edge.established + " answered)" : "")],
      [edge.first_seen], [edge.last_seen], [calls, "calls"], [edge.status, "status"], [edge.why || ""],
      [notes, "notes"]]) + "</tr>";
  });
  main.append(nodeSection, edgeSection);
  const showAll = { nodes: false, edges: false };
  function fill(body, more, html, shown, key, what) {
    const limit = showAll[key] ? shown.length : Math.min(PAGE, shown.length);
    body.innerHTML = shown.slice(0, limit).map((index) => html[index]).join("");
    more.textContent = "";
    if (limit < shown.length) {
      more.append(document.createTextNode("Listing " + limit + " of " + shown.length + " " + what + "; narrow them with the filters, or "));
      const button = el("button", { type: "button" }, "list all " + shown.length);
      button.addEventListener("click", () => { showAll[key] = true; apply(); });
      more.append(button);
    }
  }

  if (data.review) {
    const review = data.review;
    const section = el("section", { id: "review" });
    section.append(el("h2", {}, "Policy review: " + review.source));
    const facts = el("dl");
    for (const [term, value] of [
      ["observed edges", review.edges], ["allowed", review.allowed], ["blocked", review.blocked],
      ["(pod, pod, port) reachable without the policies", review.radius_before],
      ["reachable with them", review.radius_after],
      ["open beyond the observed edges", review.open_beyond_observed.length]]) {
      facts.append(el("dt", {}, term), el("dd", { "data-fact": term }, String(value)));
    }
    section.append(facts);
    const radius = el("table", { id: "radius" });
    radius.append(headRow(["namespace (its pods as servers)", "reachable without the policies", "with them"]));
    const radiusBody = el("tbody");
    for (const [namespace, counts] of Object.entries(review.by_namespace)) {
      const row = el("tr", { "data-ns": namespace });
      row.append(el("td", {}, namespace), el("td", {}, String(counts.pairs_before)), el("td", {}, String(counts.pairs_after)));
      radiusBody.append(row);
    }
    radius.append(radiusBody);
    section.append(el("h2", {}, "Blast radius by namespace ((pod, pod, port) triples)"), radius);
    if (review.open_beyond_observed.length) {
      const list = el("ul", { id: "open-beyond" });
      for (const line of review.open_beyond_observed.slice(0, 200)) list.append(el("li", {}, line));
      section.append(el("h2", {}, "Open beyond the observed edges"), list);
    }
    section.append(el("h2", {}, "Rollout plan"), el("pre", { id: "plan" }, review.plan));
    main.append(section);
  }
  document.body.append(main);

  function headRow(names) {
    const head = el("thead"), row = el("tr");
    for (const name of names) row.append(el("th", { scope: "col" }, name));
    head.append(row);
    return head;
  }

  // ---- filtering ----
  const state = { ns: "", q: "", only: "" };
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.ns = params.get("ns") || "";
    state.q = (params.get("q") || "").toLowerCase();
    state.only = params.get("only") || "";
    nsSelect.value = state.ns; search.value = state.q; only.value = state.only;
  }
  function writeHash() {
    const params = new URLSearchParams();
    if (state.ns) params.set("ns", state.ns);
    if (state.q) params.set("q", state.q);
    if (state.only) params.set("only", state.only);
    history.replaceState(null, "", "#" + params.toString());
  }
  const visibleEdges = new Array(edges.length).fill(true);
  const visibleNodes = new Array(nodes.length).fill(true);
  function apply() {
    const touched = new Array(nodes.length).fill(false);
    const shownEdges = [], shownNodes = [];
    edges.forEach((edge, index) => {
      const inNs = !state.ns || nodes[edge.from].group === state.ns || nodes[edge.to].group === state.ns;
      const matches = !state.q || edgeText[index].includes(state.q);
      const kept = state.only === "new-rare" ? edge.new || edge.rare
        : state.only === "findings" ? findingEdge(edge) : true;
      const show = inNs && matches && kept;
      visibleEdges[index] = show;
      if (show) { shownEdges.push(index); touched[edge.from] = true; touched[edge.to] = true; }
    });
    nodes.forEach((node, index) => {
      const inNs = !state.ns || node.group === state.ns;
      const matches = !state.q || node.label.toLowerCase().includes(state.q) || touched[index];
      const show = (inNs || touched[index]) && matches && (!state.only || touched[index]);
      visibleNodes[index] = show;
      if (show) shownNodes.push(index);
    });
    fill(nodeBody, nodeMore, nodeHtml, shownNodes, "nodes", "ends");
    fill(edgeBody, edgeMore, edgeHtml, shownEdges, "edges", "edges");
    summary.textContent = nodes.length + " ends, " + edges.length + " edges" +
      (shownEdges.length < edges.length || shownNodes.length < nodes.length
        ? " (showing " + shownNodes.length + " and " + shownEdges.length + ")" : "");
    document.body.dataset.nodes = nodes.length;
    document.body.dataset.edges = edges.length;
    document.body.dataset.visibleNodes = shownNodes.length;
    document.body.dataset.visibleEdges = shownEdges.length;
    draw();
  }
  nsSelect.addEventListener("change", () => { state.ns = nsSelect.value; writeHash(); apply(); });
  search.addEventListener("input", () => { state.q = search.value.toLowerCase(); writeHash(); apply(); });
  only.addEventListener("change", () => { state.only = only.value; writeHash(); apply(); });
  window.addEventListener("hashchange", () => { readHash(); apply(); });

  // ---- drawing ----
  const colors = { workload: "#2f6fb3", external: "#7a5cb8", metadata: "#c0392b", node: "#3d8a5a", unresolved: "#8a8f98" };
  function draw() {
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(width * ratio); canvas.height = Math.ceil(height * ratio);
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = "12px system-ui, sans-serif";
    for (const [name, box] of boxes) {
      const dim = state.ns && state.ns !== name;
      g.fillStyle = dim ? "#fafbfc" : "#f4f6f9"; g.strokeStyle = "#d6dbe3";
      g.fillRect(box.x, box.y, box.w, box.h); g.strokeRect(box.x, box.y, box.w, box.h);
      g.fillStyle = dim ? "#b5bcc6" : "#5c6777"; g.fillText(name, box.x + 8, box.y + 16);
    }
    // Edges under the nodes: blocked red, new orange, allowed green. One
    // path per look (a stroke per edge costs seconds at 20 000 edges).
    const looks = new Map();
    edges.forEach((edge, index) => {
      const color = edge.status === "blocked" ? "#d62d20" : edge.new ? "#e08a00"
        : edge.status === "allowed" ? "#2e8b57" : "#7f8a99";
      const key = color + (edge.status === "never-connected" ? " dashed" : "") + (visibleEdges[index] ? "" : " dim");
      if (!looks.has(key)) looks.set(key, []);
      looks.get(key).push(index);
    });
    // Dimmed first, so what is shown is drawn over them.
    const order = [...looks.keys()].sort((a, b) => (b.endsWith(" dim") ? 1 : 0) - (a.endsWith(" dim") ? 1 : 0));
    for (const key of order) {
      const [color] = key.split(" ");
      g.globalAlpha = key.endsWith(" dim") ? 0.06 : 0.85;
      g.strokeStyle = color;
      g.lineWidth = color === "#d62d20" ? 2 : 1;
      g.setLineDash(key.includes(" dashed") ? [4, 4] : []);
      g.beginPath();
      for (const index of looks.get(key)) {
        const edge = edges[index], a = place[edge.from], b = place[edge.to];
        const x1 = a.x + NODE_W / 2, y1 = a.y + NODE_H / 2, x2 = b.x + NODE_W / 2, y2 = b.y + NODE_H / 2;
        g.moveTo(x1, y1);
        g.quadraticCurveTo((x1 + x2) / 2 + (y2 - y1) * 0.15, (y1 + y2) / 2 - (x2 - x1) * 0.15, x2, y2);
      }
      g.stroke();
    }
    g.setLineDash([]); g.globalAlpha = 1;
    nodes.forEach((node, index) => {
      const p = place[index];
      g.globalAlpha = visibleNodes[index] ? 1 : 0.15;
      g.fillStyle = "#fff"; g.strokeStyle = colors[node.kind] || "#8a8f98";
      g.lineWidth = node.flags.length ? 2.5 : 1.2;
      g.fillRect(p.x, p.y, NODE_W, NODE_H); g.strokeRect(p.x, p.y, NODE_W, NODE_H);
      g.fillStyle = "#1d2430";
      const name = node.label.length > 26 ? node.label.slice(0, 25) + "\u2026" : node.label;
      g.fillText(name, p.x + 6, p.y + 14);
      g.fillStyle = "#5c6777";
      const detail = (node.workload_kind || node.kind) + (node.replicas !== undefined ? " \u00d7" + node.replicas : "") +
        (node.flags.length ? " \u2022 " + node.flags.join(", ") : "");
      g.fillText(detail, p.x + 6, p.y + 28);
    });
    g.globalAlpha = 1;
  }

  readHash();
  apply();
  document.body.dataset.renderMs = Math.round(performance.now() - started);
  // Since navigation began: the page parsed, its data read, drawn and listed.
  document.body.dataset.loadMs = Math.round(performance.now());
  document.body.dataset.ready = "true";
})();
