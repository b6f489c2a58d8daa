// A small point-cloud viewer on a 2D canvas: drag rotates, wheel zooms, click picks the
// nearest visible point (a z-buffer decides visibility). Labels colour defect points red.
"use strict";
class CloudViewer {
  constructor(canvas) {
    this.canvas = canvas; this.ctx = canvas.getContext("2d");
    this.yaw = 0.6; this.pitch = -0.9; this.zoom = 1.0;
    this.points = null; this.labels = null; this.index = null; this.onPick = null; this.marker = -1;
    let down = null, moved = false;
    canvas.addEventListener("mousedown", e => { down = [e.offsetX, e.offsetY]; moved = false; });
    window.addEventListener("mouseup", () => { down = null; });
    canvas.addEventListener("mousemove", e => {
      if (!down) return;
      const dx = e.offsetX - down[0], dy = e.offsetY - down[1];
      if (Math.abs(dx) + Math.abs(dy) > 3) moved = true;
      if (!moved) return;
      this.yaw += dx * 0.01; this.pitch += dy * 0.01; down = [e.offsetX, e.offsetY]; this.draw();
    });
    canvas.addEventListener("click", e => {
      if (moved) return;
      const r = canvas.getBoundingClientRect();
      const x = (e.clientX - r.left) * canvas.width / r.width, y = (e.clientY - r.top) * canvas.height / r.height;
      const k = this.pick(x, y);
      if (k >= 0 && this.onPick) { this.marker = k; this.draw(); this.onPick(this.rowOf(k), k); }
    });
    canvas.addEventListener("wheel", e => { e.preventDefault(); this.zoom *= Math.exp(-e.deltaY * 0.001); this.draw(); },
                            { passive: false });
  }
  static decode(b64, Type) {
    const bin = atob(b64), buf = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
    return new Type(buf.buffer);
  }
  setCloud(payload) {  // payload from the server: base64 float32 points (unit diagonal), uint8 labels, int32 index
    this.points = CloudViewer.decode(payload.points, Float32Array);
    this.labels = payload.labels ? CloudViewer.decode(payload.labels, Uint8Array) : null;
    this.index = payload.index ? CloudViewer.decode(payload.index, Int32Array) : null;
    this.marker = -1; this.draw();
  }
  rowOf(k) { return this.index ? this.index[k] : k; }
  project() {
    const n = this.points.length / 3, P = this.points;
    const cy = Math.cos(this.yaw), sy = Math.sin(this.yaw), cp = Math.cos(this.pitch), sp = Math.sin(this.pitch);
    const W = this.canvas.width, H = this.canvas.height, s = 0.9 * Math.min(W, H) * this.zoom;
    this.sx = new Float32Array(n); this.sy = new Float32Array(n); this.sz = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = P[3 * i], y = P[3 * i + 1], z = P[3 * i + 2];
      const x1 = cy * x - sy * y, y1 = sy * x + cy * y;         // yaw about z
      const y2 = cp * y1 - sp * z, z2 = sp * y1 + cp * z;       // pitch about x
      this.sx[i] = W / 2 + x1 * s; this.sy[i] = H / 2 - z2 * s; this.sz[i] = y2;  // larger y2 = farther
    }
  }
  draw() {
    const ctx = this.ctx, W = this.canvas.width, H = this.canvas.height;
    ctx.fillStyle = "#10151f"; ctx.fillRect(0, 0, W, H);
    if (!this.points) return;
    this.project();
    const img = ctx.getImageData(0, 0, W, H), D = img.data, zb = new Float32Array(W * H).fill(Infinity);
    const n = this.sx.length; let zmin = Infinity, zmax = -Infinity;
    for (let i = 0; i < n; i++) { zmin = Math.min(zmin, this.sz[i]); zmax = Math.max(zmax, this.sz[i]); }
    const zr = zmax - zmin || 1; this.visible = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const px = Math.round(this.sx[i]), py = Math.round(this.sy[i]), z = this.sz[i];
      const shade = 1 - 0.6 * (z - zmin) / zr, bad = this.labels && this.labels[i];
      const r = bad ? 255 : 150 * shade + 40, g = bad ? 60 : 170 * shade + 40, b = bad ? 50 : 200 * shade + 40;
      for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) {
        const x = px + dx, y = py + dy;
        if (x < 0 || y < 0 || x >= W || y >= H) continue;
        const o = y * W + x;
        if (z >= zb[o]) continue;
        zb[o] = z; D[4 * o] = r; D[4 * o + 1] = g; D[4 * o + 2] = b; D[4 * o + 3] = 255;
      }
    }
    this.zbuf = zb;
    ctx.putImageData(img, 0, 0);
    if (this.marker >= 0) {
      ctx.strokeStyle = "#f0b429"; ctx.lineWidth = 2; ctx.beginPath();
      ctx.arc(this.sx[this.marker], this.sy[this.marker], 7, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  pick(x, y) {  // nearest point to (x, y) within 8 px whose depth is visible there
    if (!this.points) return -1;
    let best = -1, bestScore = Infinity; const W = this.canvas.width;
    for (let i = 0; i < this.sx.length; i++) {
      const dx = this.sx[i] - x, dy = this.sy[i] - y, d2 = dx * dx + dy * dy;
      if (d2 > 64) continue;
      const o = Math.round(this.sy[i]) * W + Math.round(this.sx[i]);
      if (this.zbuf && this.sz[i] > this.zbuf[o] + 0.02) continue;  // hidden behind the surface
      const score = d2 + 1000 * this.sz[i];
      if (score < bestScore) { bestScore = score; best = i; }
    }
    return best;
  }
  // screen position of cloud row k (for tests and for marking)
  screenOf(k) { return [this.sx[k], this.sy[k]]; }
}
window.CloudViewer = CloudViewer;
