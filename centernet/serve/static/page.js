// The page of `centernet serve`: send an image to POST /predict once, draw the boxes it returns
// as SVG over the image, and filter them with the score slider (no new request).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let model = null;       // GET /model
let result = null;      // the last POST /predict answer (all detections above 0)
let roundTripMs = 0;

// centernet.viz.class_color: golden-ratio hue steps, saturation 0.85, value 0.95
function classColor(label) {
  const hue = (label * 0.618033988749895) % 1, s = 0.85, v = 0.95;
  const i = Math.floor(hue * 6), f = hue * 6 - i;
  const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return `rgb(${Math.round(r * 255)}, ${Math.round(g * 255)}, ${Math.round(b * 255)})`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadModel() {
  document.querySelectorAll(".origin").forEach((node) => { node.textContent = location.origin; });
  try {
    const response = await fetch("/model");
    model = await response.json();
    if (!response.ok) throw new Error(model.error);
  } catch (error) {
    $("model").textContent = `cannot read /model: ${error.message}`;
    $("model").dataset.loaded = "error";
    return;
  }
  const size = model.keep_res ? `own resolution (padded to 32)` : `${model.input_size.join("x")} input`;
  $("model").textContent = `${model.name} · ${model.backend} on ${model.device} · ${model.num_classes} classes ` +
    `(${model.classes.slice(0, 8).join(", ")}${model.num_classes > 8 ? ", …" : ""}) · ${size}`;
  $("threshold").value = model.server.score_threshold;
  $("threshold-value").value = Number($("threshold").value).toFixed(2);
  $("model").dataset.loaded = "yes";
}

async function detect(file) {
  showError("");
  if (!file) return;
  const started = performance.now();
  let answer;
  try {
    const limit = model ? model.max_detections : 100;
    const response = await fetch(`/predict?score_threshold=0&max_detections=${limit}`, {
      method: "POST", body: file, headers: {"Content-Type": file.type || "application/octet-stream"},
    });
    answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  } catch (error) {
    showError(`${file.name}: ${error.message}`);
    return;
  }
  roundTripMs = performance.now() - started;
  result = answer;
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  for (const id of ["controls", "stage", "detections"]) $(id).hidden = false;
  fitImage();
  await photo.decode().catch(() => {});  // laid out at its size before the labels are sized
  $("overlay").setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
  $("caption").textContent = `${file.name} · ${result.width}x${result.height}`;
  const t = result.timing_ms;
  $("latency").textContent = `${Math.round(roundTripMs)} ms round trip · server ${Math.round(t.total)} ms ` +
    `(decode ${Math.round(t.decode)}, queue ${Math.round(t.queue)}, model ${Math.round(t.inference)} ms ` +
    `in a batch of ${result.batch_size})`;
  render();
}

// Show the image as large as the page allows (small images too) and whole in the window below its
// top; the SVG over it scales with it (its viewBox is in image pixels).
function fitImage() {
  if (!result) return;
  const room = document.querySelector("main").clientWidth - 40;  // less main's padding
  const beside = room >= 900 ? room - 340 : room;  // the table goes to its right on a wide page
  const top = $("result").getBoundingClientRect().top + window.scrollY;
  const height = Math.max(240, window.innerHeight - top - 40);  // room for the caption below
  const width = Math.min(beside, height * result.width / result.height);
  document.querySelector(".frame").style.width = `${Math.max(160, Math.round(width))}px`;
}

function render() {
  const threshold = Number($("threshold").value);
  $("threshold-value").value = threshold.toFixed(2);
  if (!result) return;
  const overlay = $("overlay"), rows = document.querySelector("#detections tbody");
  overlay.replaceChildren();
  rows.replaceChildren();
  const zoom = ($("photo").clientWidth || result.width) / result.width;  // screen pixels per image pixel
  const font = 13 / zoom;  // labels 13 screen pixels high, in image pixels
  let shown = 0;
  result.scores.forEach((score, i) => {
    if (score <= threshold) return;  // the server's rule: keep scores above the threshold
    shown += 1;
    const [x1, y1, x2, y2] = result.boxes[i], color = classColor(result.labels[i]);
    const text = `${result.classes[i]} ${score.toFixed(2)}`;
    const group = document.createElementNS(SVG, "g");
    group.setAttribute("class", "detection");
    group.dataset.score = score;
    const box = document.createElementNS(SVG, "rect");
    box.setAttribute("class", "box");
    box.setAttribute("x", x1); box.setAttribute("y", y1);
    box.setAttribute("width", Math.max(0, x2 - x1)); box.setAttribute("height", Math.max(0, y2 - y1));
    box.setAttribute("stroke", color);
    const tagHeight = font * 1.3, tagY = y1 - tagHeight >= 0 ? y1 - tagHeight : y1;  // above the box
    const tag = document.createElementNS(SVG, "rect");
    tag.setAttribute("class", "tag");
    tag.setAttribute("y", tagY);
    tag.setAttribute("height", tagHeight);
    tag.setAttribute("fill", color);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("y", tagY + font * 0.1);
    label.setAttribute("font-size", font);
    label.textContent = text;
    group.append(box, tag, label);
    overlay.append(group);
    const tagWidth = label.getComputedTextLength() + font * 0.4;  // measured once drawn
    const tagX = Math.max(0, Math.min(x1, result.width - tagWidth));  // inside the image's right edge
    tag.setAttribute("x", tagX); tag.setAttribute("width", tagWidth);
    label.setAttribute("x", tagX + font * 0.2);

    const row = rows.insertRow();
    row.insertCell().innerHTML = `<span class="swatch" style="background:${color}"></span>`;
    row.cells[0].append(result.classes[i]);
    row.insertCell().textContent = score.toFixed(3);
    row.insertCell().textContent = result.boxes[i].map((v) => Math.round(v)).join(", ");
  });
  $("count").dataset.count = shown;
  $("count").textContent = `${shown} box${shown === 1 ? "" : "es"} of ${result.scores.length}`;
}

$("file").addEventListener("change", (event) => detect(event.target.files[0]));
$("threshold").addEventListener("input", render);
window.addEventListener("resize", () => { fitImage(); render(); });
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  document.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  document.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
}
document.addEventListener("drop", (event) => detect(event.dataTransfer.files[0]));
loadModel();
