// cnnx serve's page: values under the pointer, their arithmetic, edits that recompute.  Every request to /api
// carries the token written into this page (X-Cnnx-Token), which a page of another origin cannot read or send.
const CONFIG = JSON.parse(document.getElementById("cnnx-config").textContent);
const RUN = CONFIG.run;  // the run this page shows: every value it asks for is of this run
const api = (path, options = {}) => fetch(path, {...options, credentials: "same-origin",
  headers: {...(options.headers || {}), "X-Cnnx-Token": CONFIG.token}});
const jsonPost = (path, body) => api(path, {method: "POST", headers: {"Content-Type": "application/json"},
  body: JSON.stringify(body)});
// A number the server sent: non-finite values come as the strings "NaN", "Infinity" and "-Infinity".
const shown = v => Number(v).toPrecision(6);
const fail = async answer => {
  let text = `the server answered ${answer.status}`;
  try { text = (await answer.json()).error || text; } catch (error) { /* not JSON */ }
  document.getElementById("cnnx-error").textContent = text;
};
const reloadOr = async answer => { if (answer.ok) location.reload(); else await fail(answer); };
// The side (or bottom) panel: the page makes room for it while it is open, and the map clicked stays in view.
const panelOpen = (html, near) => {
  const panel = document.getElementById("cnnx-explain");
  panel.innerHTML = `<button type="button" id="cnnx-close" style="float:right" aria-label="close">close</button>` +
    html;
  document.body.classList.add("cnnx-panel");
  document.getElementById("cnnx-close").addEventListener("click", () => {
    panel.innerHTML = "";
    document.body.classList.remove("cnnx-panel");
  });
  if (near) {  // the page made room, which moved the map: bring it back between the bar and a sheet below
    const map = near.getBoundingClientRect(), sheet = panel.getBoundingClientRect();
    const top = document.getElementById("cnnx-live").getBoundingClientRect().bottom + 2;
    const beside = Math.min(map.right, sheet.right) <= Math.max(map.left, sheet.left);
    const bottom = (beside ? window.innerHeight : sheet.top) - 2;
    if (map.top < top) window.scrollBy(0, map.top - top);
    else if (map.bottom > bottom) window.scrollBy(0, Math.min(map.bottom - bottom, map.top - top));
  }
  return panel;
};
// A step of the flow opens its stage's card just under the flow, large, with its maps, numbers, story and
// receptive field, the flow still in sight; the card goes back to its place in the list when it is closed.
const stageView = (() => {
  let card = null, place = null, opener = null;
  const close = () => {
    if (!card) return;
    place.replaceWith(card);
    document.getElementById("cnnx-stage-view").remove();
    document.body.classList.remove("cnnx-viewing");
    opener.removeAttribute("aria-current");
    card = null;
  };
  const open = (target, link) => {
    close();
    [card, opener] = [target, link];
    const flow = link.closest("nav.flow"), view = document.createElement("div");
    view.id = "cnnx-stage-view";
    view.innerHTML = `<button type="button" id="cnnx-stage-close">close</button>`;
    place = document.createElement("p");
    place.className = "muted";
    place.textContent = `(${target.querySelector("h2").firstChild.textContent.trim()} is open under the flow)`;
    target.replaceWith(place);
    view.append(target);
    flow.after(view);
    link.setAttribute("aria-current", "step");
    view.querySelector("button").addEventListener("click", () => { const back = opener; close(); back.focus(); });
    // The flow becomes one strip (scrolled sideways to the step clicked) with the card under it, just under the bar.
    document.body.classList.add("cnnx-viewing");
    const strip = flow.querySelector("ol"), step = link.getBoundingClientRect(), box = strip.getBoundingClientRect();
    strip.scrollLeft += step.left - box.left - (box.width - step.width) / 2;
    const bar = document.getElementById("cnnx-live").getBoundingClientRect().bottom;
    window.scrollBy(0, flow.getBoundingClientRect().top - bar - 4);
    target.setAttribute("tabindex", "-1");
    target.focus({preventScroll: true});
  };
  return {open};
})();
(async () => {
  // The page's base is its run's folder, so a link to a part of the page is scrolled to here, not fetched.
  // (This script runs at the top of the body, before the rest is read: the clicks are caught on the document.)
  document.addEventListener("click", event => {
    const link = event.target.closest && event.target.closest('a[href^="#"]');
    const target = link && document.getElementById(link.getAttribute("href").slice(1));
    if (!target) return;
    event.preventDefault();
    if (link.closest("header nav.flow")) stageView.open(target, link);
    else target.scrollIntoView();
    history.replaceState(null, "", `${location.pathname}${location.search}${link.getAttribute("href")}`);
  });
  const ready = new Promise(done => document.readyState === "loading" ?
    document.addEventListener("DOMContentLoaded", done) : done());
  ready.then(() => {
    const hint = document.getElementById("click-hint");
    if (hint) hint.textContent = "point at a map to read a value, click it to see how it was computed;";
    const steps = document.getElementById("flow-hint");
    if (steps) steps.textContent = "Click a step above to open its stage under the flow;";
    // After an edit the page comes again: the stage that was open opens again.
    const link = location.hash && document.querySelector(`header nav.flow a[href="${CSS.escape(location.hash)}"]`);
    const target = link && document.getElementById(location.hash.slice(1));
    if (target) stageView.open(target, link);
  });
  const manifest = await (await fetch(`/run/${RUN}/manifest.json`)).json();
  const show = document.getElementById("cnnx-value");
  const escape = text => String(text).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
  const grid = (rows, title) => {
    const scale = Math.max(1e-12, ...rows.flat().filter(v => v !== null && isFinite(v)).map(Math.abs));
    const cells = rows.map(r => "<tr>" + r.map(v => {
      if (v === null) return "<td style='color:var(--muted)'>pad</td>";
      if (!isFinite(v)) return `<td style="padding:1px 4px;text-align:right">${String(v)}</td>`;
      const a = Math.min(1, Math.abs(v) / scale), hue = v < 0 ? [33, 102, 172] : [178, 24, 43];
      // The cell's colour mixed with white and painted opaque, so the text (black or white, whichever stands
      // out more) is judged against the colour shown, whatever panel the table sits on.
      const paint = hue.map(c => Math.round(255 * (1 - a) + c * a));
      const linear = paint.map(c => { const s = c / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; });
      const light = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
      const ink = (light + 0.05) / 0.05 >= 1.05 / (light + 0.05) ? "#000" : "#fff";
      return `<td style="background:rgb(${paint.join(",")});color:${ink};padding:1px 4px;text-align:right">` +
        `${Number(v).toPrecision(3)}</td>`;
    }).join("") + "</tr>").join("");
    return `<table style="border-collapse:collapse;font-size:.8rem;display:inline-table;margin:0 .6rem .4rem 0">` +
      `<caption style="text-align:left">${title}</caption>${cells}</table>`;
  };
  document.querySelectorAll("figure img").forEach(img => {
    const src = img.getAttribute("src");
    const stage = manifest.stages.findIndex(s => s.maps.some(m => m.tile === src));
    if (stage < 0) return;
    const entry = manifest.stages[stage].maps.find(m => m.tile === src);
    const [C, H, W] = manifest.stages[stage].shape;
    // The value under the pointer (or the keyboard's cursor): its row and column in the map, and its query.
    const at = (row, col) => [row, col, `stage=${stage}&channel=${entry.channel}&row=${row}&col=${col}&run=${RUN}`];
    const place = event => {
      const box = img.getBoundingClientRect();
      return at(Math.min(H - 1, Math.floor((event.clientY - box.top) / box.height * H)),
                Math.min(W - 1, Math.floor((event.clientX - box.left) / box.width * W)));
    };
    const read = async ([row, col, query]) => {
      const answer = await api(`/api/value?${query}`);
      const data = await answer.json();
      show.textContent = answer.ok ? `stage ${stage}, map ${entry.channel} (${entry.label}), row ${row}, ` +
        `column ${col}: ${shown(data.value)}; it sees ${data.receptive_field.join("x")} input pixels`
        : data.error;
      // The square of input pixels this value sees, moved to where the pointer is, on the stage's input picture.
      const square = document.querySelector(`#stage-${stage} .field rect`);
      if (answer.ok && square && data.jump) {
        const [rh, rw] = data.receptive_field, [jh, jw] = data.jump;
        square.setAttribute("x", (col + 0.5) * jw - rw / 2);
        square.setAttribute("y", (row + 0.5) * jh - rh / 2);
      }
    };
    img.addEventListener("mousemove", event => read(place(event)));
    // The keyboard: a map takes the focus; the arrows move a cursor over its values (and on to the next map),
    // Enter explains the one there.
    let cursor = [Math.floor(H / 2), Math.floor(W / 2)];
    img.tabIndex = 0;
    img.setAttribute("aria-label", `${img.getAttribute("alt") || "a map"}: the arrow keys read its values, ` +
      "Enter shows how one was computed");
    img.addEventListener("focus", () => read(at(...cursor)));
    img.addEventListener("cnnx-enter", event => {  // from the map beside it, at the same height
      cursor = [Math.min(H - 1, Math.floor(event.detail.height * H)), event.detail.right ? W - 1 : 0];
      img.focus();
    });
    img.addEventListener("keydown", event => {
      const step = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[event.key];
      if (step) {
        event.preventDefault();
        // Pushed past a map's left or right edge, the cursor goes on into the map before or after it.
        const edge = step[1] && cursor[1] === (step[1] > 0 ? W - 1 : 0);
        const maps = edge ? [...document.querySelectorAll("figure img[tabindex]")] : [];
        const next = maps[maps.indexOf(img) + step[1]];
        if (next) {
          const detail = {height: (cursor[0] + 0.5) / H, right: step[1] < 0};
          next.dispatchEvent(new CustomEvent("cnnx-enter", {detail}));
          return;
        }
        const jump = event.shiftKey ? 10 : 1;
        cursor = [Math.max(0, Math.min(H - 1, cursor[0] + step[0] * jump)),
                  Math.max(0, Math.min(W - 1, cursor[1] + step[1] * jump))];
        read(at(...cursor));
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        explain(at(...cursor));
      }
    });
    img.addEventListener("click", event => { event.preventDefault(); explain(place(event)); });
    const explain = async ([row, col, query]) => {
      const answer = await api(`/api/explain?${query}`);
      const data = await answer.json();
      if (!answer.ok) { panelOpen(`<p>${escape(data.error)}</p>`, img); return; }
      let text = `<p><b>stage ${stage}, map ${entry.channel}, row ${row}, column ${col}</b>: ${escape(data.rule)}</p>`;
      for (const part of (data.parts || []).filter(p => p.values).slice(0, 4)) {
        text += `<div>input channel ${part.channel}: ` + grid(part.values, "window") +
          (part.weights ? grid(part.weights, "weights") + grid(part.products, "products") : "") +
          `<span style="white-space:nowrap">${part.weights ? "sum " : "= "}${shown(part.total)}</span></div>`;
      }
      if ((data.parts || []).length > 4) text += `<p>... ${data.parts.length} input channels in all</p>`;
      const inputs = (data.inputs || []).map((v, k) =>
        (data.names && data.names[k] ? escape(data.names[k]) + " " : "") + shown(v));
      if (inputs.length) text += `<p>from ${inputs.join(", ")}</p>`;
      text += `<p id="cnnx-total">${data.bias ? "plus bias " + shown(data.bias) + ": " : ""}` +
        `= <b>${shown(data.total)}</b></p>`;
      text += `<p>${manifest.model ? "" : `<button type="button" id="cnnx-field">which input pixels drove it?` +
        `</button> `}<button type="button" id="cnnx-looks">what does map ${entry.channel} look for?</button></p>`;
      panelOpen(text, img);
      const field = document.getElementById("cnnx-field");
      if (field) field.addEventListener("click", () => showWhy(`method=input-x-gradient&${query}`));
      document.getElementById("cnnx-looks").addEventListener("click", () => looksFor(stage, entry.channel));
    };
  });
  // What drove the answer, or a value: the server draws the map over the input, and says how in words.
  const showWhy = async query => {
    panelOpen("<p>computing...</p>");
    const answer = await api(`/api/why?${query}&run=${RUN}`);
    const data = await answer.json();
    if (!answer.ok) { panelOpen(`<p>${escape(data.error)}</p>`); return; }
    panelOpen(`<img src="${escape(data.image)}" alt="${escape(data.lines.join(". "))}" style="max-width:100%">`);
  };
  // The image that excites a map's channel most, found on the server by gradient ascent (cnnx features).
  // Found in the background: asked again every half second, the panel says how far it has come.
  const looksFor = async (stage, channel) => {
    panelOpen("<p>finding what it looks for...</p>");
    for (;;) {
      const answer = await api(`/api/looks-for?stage=${stage}&channel=${channel}&run=${RUN}`);
      const data = await answer.json();
      if (!answer.ok) { panelOpen(`<p>${escape(data.error)}</p>`); return; }
      if (data.busy) {
        const note = document.querySelector("#cnnx-explain p");
        if (note) note.textContent = `finding what map ${channel} of stage ${stage} looks for: step ` +
          `${data.done} of ${data.steps}`;
        await new Promise(done => setTimeout(done, 500));
        continue;
      }
      panelOpen(`<p>What map ${channel} of stage ${stage} looks for: the image that raises its sum most, from ` +
        `${shown(data.start)} to ${shown(data.reached)} in ${data.steps} steps (cnnx features).</p>` +
        `<img src="${escape(data.image)}" alt="what map ${channel} of stage ${stage} looks for" ` +
        `style="max-width:100%;image-rendering:pixelated">` +
        (data.patches ? `<p>Its strongest places among the ${data.seen === 1 ? "image" : `${data.seen} images`} ` +
          `this session has shown:</p>` +
          `<img src="${escape(data.patches)}" alt="its strongest patches" style="max-width:100%">` : ""));
      return;
    }
  };
  // The lesson's six steps on this image, in the panel: each points at its stage (outlined, brought into view), with
  // the lesson's worked example and its correction, and a window of this image worked out.
  let lesson = null;
  const lessonStep = async k => {
    if (!lesson) {
      panelOpen("<p>reading the stages...</p>");
      const answer = await api(`/api/lesson?run=${RUN}`);
      const data = await answer.json();
      if (!answer.ok) { panelOpen(`<p>${escape(data.error)}</p>`); return; }
      lesson = data.steps;
    }
    const step = lesson[k];
    document.querySelectorAll(".cnnx-pointed").forEach(card => card.classList.remove("cnnx-pointed"));
    const card = step.stage === null ? null : document.getElementById(`stage-${step.stage}`);
    if (card) card.classList.add("cnnx-pointed");
    let text = `<p><b>${escape(step.title)}</b> <span class="muted">(step ${k + 1} of ${lesson.length})</span></p>` +
      step.text.map(line => `<p>${escape(line)}</p>`).join("");
    if (step.example) {
      const e = step.example;
      text += "<div>" + grid(e.input, "the lesson's input") + grid(e.kernel, "its filter") +
        grid(e.result, "the sums, as cnnx computes them") + grid(e.stated, "as the lesson prints them") + "</div>" +
        `<p class="muted">${escape(e.correction)}</p>`;
    }
    if (step.answer) {
      text += "<p>" + step.answer.map(([name, p]) => `${escape(name)} ${(100 * p).toFixed(1)}%`).join(", ") + "</p>";
    }
    text += `<p id="cnnx-lesson-window"></p><p><button type="button" id="cnnx-lesson-back"` +
      `${k ? "" : " disabled"}>back</button> <button type="button" id="cnnx-lesson-next"` +
      `${k + 1 < lesson.length ? "" : " disabled"}>next</button></p>`;
    panelOpen(text, card && card.querySelector("figure img"));
    if (card && !card.querySelector("figure img")) card.scrollIntoView({block: "nearest"});
    document.getElementById("cnnx-lesson-back").addEventListener("click", () => lessonStep(k - 1));
    document.getElementById("cnnx-lesson-next").addEventListener("click", () => lessonStep(k + 1));
    // The keyboard stays on next (or back), but the panel shows the step from its title.
    document.getElementById(k + 1 < lesson.length ? "cnnx-lesson-next" : "cnnx-lesson-back").focus({preventScroll: true});
    document.getElementById("cnnx-explain").scrollTop = 0;
    if (step.window) {
      const w = step.window, place = document.getElementById("cnnx-lesson-window");
      const answer = await api(`/api/explain?stage=${w.stage}&channel=${w.channel}&row=${w.row}&col=${w.col}` +
        `&run=${RUN}`);
      const data = await answer.json();
      const part = answer.ok && (data.parts || []).find(p => p.values);
      if (part && place.isConnected) {  // still this step's panel
        place.innerHTML = `Its window, row ${w.row}, column ${w.col}, input channel ${part.channel}: ` +
          grid(part.values, "window") + (part.weights ? grid(part.weights, "weights") +
          grid(part.products, "products") : "") + ` sum ${shown(part.total)}` +
          (data.parts.length > 1 ? `, and so on for ${data.parts.length} input channels` : "") +
          `: <b>${shown(data.total)}</b>`;
      }
    }
  };
  document.getElementById("cnnx-lesson").addEventListener("click", () => lessonStep(0));
  if (manifest.model && manifest.model.answer) {
    document.getElementById("cnnx-why").hidden = false;
    const classes = document.getElementById("cnnx-why-class");
    Object.keys(manifest.model.answer).forEach(name => classes.add(new Option(name, name)));
    document.getElementById("cnnx-why-show").addEventListener("click", () => showWhy(
      `method=${encodeURIComponent(document.getElementById("cnnx-why-method").value)}` +
      `&class=${encodeURIComponent(classes.value)}`));
  }
  // The drawing pad is for the model trained on drawings, not for a photo classifier.
  if (manifest.model && manifest.model.answer && manifest.model.preparation === "shapes") {
    drawingPad(manifest.model.answer);
  }
  document.querySelectorAll("#cnnx-style select").forEach(choice => choice.addEventListener("change", async () => {
    await reloadOr(await jsonPost("/api/style", {[choice.name]: choice.value}));
  }));
  const editable = await (await api("/api/filters")).json();
  if (editable.filters.length) filterEditor(editable);
  if (editable.stages.length) stageEditor(editable);
  const sendImage = async file => reloadOr(await api("/api/image",
    {method: "POST", body: file, headers: {"X-File-Name": encodeURIComponent(file.name)}}));
  cameraView(sendImage);
  document.getElementById("cnnx-upload").addEventListener("change", event => sendImage(event.target.files[0]));
  document.getElementById("cnnx-sample").addEventListener("change", async event => reloadOr(
    await jsonPost("/api/sample", {name: event.target.value})));
  document.getElementById("cnnx-form").addEventListener("submit", async event => {
    event.preventDefault();
    await reloadOr(await jsonPost("/api/spec", {spec: document.getElementById("cnnx-spec").value}));
  });
  document.getElementById("cnnx-download").addEventListener("click", async () => {
    const answer = await api(`/api/download?run=${RUN}`);
    if (!answer.ok) return fail(answer);
    const name = decodeURIComponent((answer.headers.get("Content-Disposition") || "").split("filename=")[1] ||
      "cnnx-run.zip").replace(/"/g, "");
    const link = Object.assign(document.createElement("a"), {href: URL.createObjectURL(await answer.blob()),
      download: name});
    document.body.appendChild(link);
    link.click();
    link.remove();
  });
  document.addEventListener("dragover", event => {
    event.preventDefault();
    document.body.style.outline = "3px dashed var(--accent)";
  });
  document.addEventListener("dragleave", event => {
    if (!event.relatedTarget) document.body.style.outline = "";
  });
  document.addEventListener("drop", event => {
    event.preventDefault();
    document.body.style.outline = "";
    const file = event.dataTransfer.files[0];
    if (file) sendImage(file);
  });
})();
// The chain's 2-D kernels as a grid of numbers: edit them, or take a bank filter's, and every map is computed again.
function filterEditor({filters, bank}) {
  const box = document.getElementById("cnnx-filters"), pick = document.getElementById("cnnx-filter");
  const from = document.getElementById("cnnx-bank"), grid = document.getElementById("cnnx-grid");
  box.hidden = false;
  filters.forEach((filter, k) => pick.add(new Option(`stage ${filter.stage}: ${filter.spec}`, k)));
  Object.keys(bank).forEach(name => from.add(new Option(name, name)));
  const fill = weights => {
    grid.innerHTML = "<table style='border-collapse:collapse'>" + weights.map(row => "<tr>" + row.map(v =>
      `<td><input inputmode="decimal" value="${+v.toPrecision(6)}" aria-label="weight" ` +
      `style="width:11ch;font:.8rem ui-monospace,monospace"></td>`).join("") +
      "</tr>").join("") + "</table>";
  };
  pick.addEventListener("change", () => { from.value = ""; fill(filters[pick.value].weights); });
  from.addEventListener("change", () => fill(from.value ? bank[from.value] : filters[pick.value].weights));
  fill(filters[0].weights);
  document.getElementById("cnnx-apply").addEventListener("click", async () => {
    const weights = [...grid.querySelectorAll("tr")].map(row => [...row.querySelectorAll("input")].map(
      cell => cell.value === "" ? NaN : Number(cell.value)));
    const filter = filters[pick.value];
    await reloadOr(await jsonPost("/api/filter", {stage: filter.stage, index: filter.index, weights}));
  });
}
// A canvas to draw on: each stroke is sent as the image and the page comes back with the model's answer to it.
// The drawing is kept in the tab's session storage, so it survives the reload and the next stroke adds to it.
function drawingPad(answer) {
  const [best, share] = Object.entries(answer).sort((a, b) => b[1] - a[1])[0];
  const pad = Object.assign(document.createElement("div"), {id: "cnnx-pad"});
  pad.innerHTML = `<p style="margin:.3rem 0">Draw on the square in dark ink; the model answers each stroke: ` +
    `<b id="cnnx-answer"></b> ` +
    `<button type="button" id="cnnx-clear">clear</button></p>` +
    `<canvas id="cnnx-canvas" width="192" height="192" style="border:1px solid var(--line);touch-action:none;` +
    `cursor:crosshair;width:160px;height:160px;display:block"></canvas>`;
  const live = document.getElementById("cnnx-live");
  live.insertBefore(pad, document.getElementById("cnnx-form"));  // beside the controls on a wide screen
  document.getElementById("cnnx-answer").textContent = `${best} ${(share * 100).toFixed(1)}%`;
  const canvas = document.getElementById("cnnx-canvas"), pen = canvas.getContext("2d");
  const blank = () => { pen.fillStyle = "#fff"; pen.fillRect(0, 0, canvas.width, canvas.height); };
  blank();
  const kept = sessionStorage.getItem("cnnx-drawing");
  if (kept) { const picture = new Image(); picture.onload = () => pen.drawImage(picture, 0, 0); picture.src = kept; }
  pen.lineWidth = 7; pen.lineCap = pen.lineJoin = "round"; pen.strokeStyle = "#111";
  let drawing = false;
  const at = event => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", event => { drawing = true; pen.beginPath(); pen.moveTo(...at(event)); });
  canvas.addEventListener("pointermove", event => { if (drawing) { pen.lineTo(...at(event)); pen.stroke(); } });
  const send = () => {
    if (!drawing) return;
    drawing = false;
    sessionStorage.setItem("cnnx-drawing", canvas.toDataURL("image/png"));
    canvas.toBlob(async blob => {
      await reloadOr(await api("/api/image", {method: "POST", body: blob, headers: {"X-File-Name": "drawing.png"}}));
    }, "image/png");
  };
  canvas.addEventListener("pointerup", send);
  canvas.addEventListener("pointerleave", send);
  document.getElementById("cnnx-clear").addEventListener("click", () => {
    sessionStorage.removeItem("cnnx-drawing"); blank(); });
}
// The camera: each frame, cut square and made 256x256, goes through the stages on the server in memory, and the
// flow of its maps is drawn here; the next frame is sent when the answer comes, so a slow machine drops frames
// rather than queueing them.  "run this frame" makes it the page's image, as an upload.
function cameraView(sendImage) {
  const start = document.getElementById("cnnx-camera-start");
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) return;  // no camera API (not localhost)
  start.hidden = false;
  const panel = document.getElementById("cnnx-camera"), video = document.getElementById("cnnx-camera-video");
  const flow = document.querySelector("#cnnx-camera-flow ol"), rate = document.getElementById("cnnx-camera-rate");
  const canvas = Object.assign(document.createElement("canvas"), {width: 256, height: 256});
  const context = canvas.getContext("2d");
  const escape = text => String(text).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
  let stream = null;
  const stop = () => {
    if (stream) stream.getTracks().forEach(track => track.stop());
    stream = null;
    panel.hidden = true;
    start.textContent = "camera";
  };
  const draw = data => {
    flow.innerHTML = data.stages.map(stage => `<li><a href="#stage-${Number(stage.index)}"><b>` +
      `${escape(stage.title)}</b><span class="thumbs" style="--columns:` +
      `${Math.ceil(Math.sqrt(stage.tiles.length))}">` + stage.tiles.map(tile => `<img src="${tile}" alt="">`).join("") +
      `</span><span class="muted">${escape(stage.shape)}</span></a></li>`).join("") +
      (data.answer.length ? `<li><a href="#answer"><b>answer</b><span>${escape(data.answer[0][0])}</span>` +
        `<span class="muted">${(100 * data.answer[0][1]).toFixed(1)}%</span></a></li>` : "");
  };
  start.addEventListener("click", async () => {
    if (stream) return stop();
    try {
      stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
    } catch (error) {
      document.getElementById("cnnx-error").textContent = `the camera could not be opened (${error.name})`;
      return;
    }
    video.srcObject = stream;
    await video.play();
    panel.hidden = false;
    start.textContent = "stop the camera";
    const times = [];
    while (stream) {
      const side = Math.min(video.videoWidth, video.videoHeight);
      if (!side) { await new Promise(done => setTimeout(done, 50)); continue; }
      context.drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side, 0, 0,
        256, 256);
      const frame = await new Promise(done => canvas.toBlob(done, "image/jpeg", 0.92));
      const answer = await api("/api/frame", {method: "POST", body: frame, headers: {"Content-Type": "image/jpeg"}});
      if (!answer.ok) { await fail(answer); stop(); return; }
      if (!stream) return;
      draw(await answer.json());
      times.push(performance.now());
      const now = performance.now(), span = Math.min(2000, now - times[0]);
      if (span > 0) {
        rate.textContent = `${(1000 * times.filter(time => time > now - span).length / span).toFixed(1)} frames a second`;
      }
      panel.dataset.frames = times.length;
    }
  });
  document.getElementById("cnnx-camera-save").addEventListener("click", () => canvas.toBlob(
    blob => { stop(); sendImage(new File([blob], "camera.png", {type: "image/png"})); }, "image/png"));
}
// A kernel as a small picture: each weight a cell, blue below zero, white at zero, red above.
function kernelPicture(weights, side = 36) {
  const canvas = Object.assign(document.createElement("canvas"), {width: side, height: side});
  const context = canvas.getContext("2d");
  const rows = weights.length, cols = weights[0].length;
  const largest = Math.max(...weights.flat().map(Math.abs)) || 1;
  weights.forEach((row, i) => row.forEach((value, j) => {
    const t = Math.min(1, Math.abs(value) / largest), fade = Math.round(255 * (1 - t));
    context.fillStyle = value >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
    context.fillRect(Math.floor(j * side / cols), Math.floor(i * side / rows), Math.ceil(side / cols),
      Math.ceil(side / rows));
  }));
  return canvas;
}
// The stages as a list: each one's text, moved up or down or removed; a stage added from a kind (a conv's filters
// picked from the bank by their pictures); run sends the joined text as the spec box would.  A spec the server
// cannot read is said under the toolbar and the list is kept as it is.
function stageEditor({stages, kinds, bank}) {
  const box = document.getElementById("cnnx-stages"), list = document.getElementById("cnnx-stage-list");
  const kind = document.getElementById("cnnx-add-kind"), picker = document.getElementById("cnnx-bank-picker");
  box.hidden = false;
  const texts = [...stages];
  const picked = new Set();
  const button = (label, name, act) => {
    const made = Object.assign(document.createElement("button"), {type: "button", textContent: label});
    made.setAttribute("aria-label", name);
    made.addEventListener("click", act);
    return made;
  };
  const draw = (focus = null) => {
    list.replaceChildren(...texts.map((text, k) => {
      const item = document.createElement("li");
      const input = Object.assign(document.createElement("input"), {value: text, spellcheck: false});
      input.setAttribute("aria-label", `stage ${k + 1}`);
      input.style.cssText = "font-family:ui-monospace,monospace;width:min(36rem,60vw);line-height:1.6;padding:.1em .3em";
      input.addEventListener("input", () => { texts[k] = input.value; });
      const move = (to, key) => button(key === "up" ? "\u2191" : "\u2193", `move stage ${k + 1} ${key}`, () => {
        [texts[k], texts[to]] = [texts[to], texts[k]];
        draw(`${to}-${key}`);
      });
      item.append(input, " ");
      if (k > 0) item.append(move(k - 1, "up"));
      if (k < texts.length - 1) item.append(move(k + 1, "down"));
      if (texts.length > 1) item.append(button("remove", `remove stage ${k + 1}`, () => {
        texts.splice(k, 1);
        draw();
      }));
      return item;
    }));
    if (focus) {  // the moved stage keeps the keyboard's place
      const [at, key] = focus.split("-");
      const again = list.children[Number(at)].querySelector(`button[aria-label$="${key}"]`) ||
        list.children[Number(at)].querySelector("input");
      again.focus();
    }
  };
  Object.keys(kinds).forEach(name => kind.add(new Option(name, name)));
  const showPicker = () => { picker.hidden = kind.value !== "conv"; };
  Object.entries(bank).forEach(([name, weights]) => {
    const choice = Object.assign(document.createElement("button"), {type: "button", title: name});
    choice.setAttribute("aria-pressed", "false");
    choice.style.cssText = "display:flex;flex-direction:column;align-items:center;font-size:.7rem;padding:.2rem";
    choice.append(kernelPicture(weights), name);
    choice.addEventListener("click", () => {
      if (picked.has(name)) picked.delete(name); else picked.add(name);
      choice.setAttribute("aria-pressed", String(picked.has(name)));
      choice.style.outline = picked.has(name) ? "3px solid var(--accent)" : "";
    });
    picker.append(choice);
  });
  kind.addEventListener("change", showPicker);
  showPicker();
  document.getElementById("cnnx-add").addEventListener("click", () => {
    if (kind.value === "conv") {
      if (!picked.size) {
        document.getElementById("cnnx-error").textContent = "pick one or more filters for the new conv stage";
        return;
      }
      texts.push(`conv(${[...picked].join(", ")})`);
    } else {
      texts.push(kinds[kind.value]);
    }
    draw();
  });
  document.getElementById("cnnx-run-stages").addEventListener("click", async () => {
    const spec = texts.join(" -> ");
    document.getElementById("cnnx-spec").value = spec;
    await reloadOr(await jsonPost("/api/spec", {spec}));
  });
  draw();
}
