// pen admin UI, firmware page: uploads the update image with a progress
// bar. Without this script the form uploads the whole image; with it, only
// the part the appliance reads (up to the end of root A's file system)
// is sent.
"use strict";

(function () {
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var progress = document.getElementById("upload-progress");
  var bar = document.getElementById("upload-bar");
  var text = document.getElementById("upload-text");
  var button = document.getElementById("upload-button");

  function mib(n) { return (n / 1048576).toFixed(1) + " MiB"; }

  // neededBytes reads the GPT entry of root A and its SquashFS superblock
  // and returns how much of the image the appliance reads.
  function neededBytes(file) {
    var u64 = function (dv, off) { return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 4294967296; };
    return file.slice(0, 34 * 512).arrayBuffer().then(function (head) {
      var dv = new DataView(head);
      var start = u64(dv, 2 * 512 + 128 + 32) * 512;
      if (start <= 0 || start + 4096 > file.size) {
        return file.size;
      }
      return file.slice(start, start + 48).arrayBuffer().then(function (sb) {
        var sv = new DataView(sb);
        if (sv.getUint32(0, true) !== 0x73717368) { // "hsqs"
          return file.size;
        }
        var used = u64(sv, 40);
        return Math.min(file.size, start + Math.ceil(used / 4096) * 4096);
      });
    }).catch(function () { return file.size; });
  }

  form.addEventListener("submit", function (ev) {
    var file = document.getElementById("image").files[0];
    if (!file) {
      return;
    }
    ev.preventDefault();
    button.disabled = true;
    progress.hidden = false;
    text.className = "small";
    text.textContent = "Reading " + file.name + " …";
    neededBytes(file).then(function (n) {
      var data = new FormData();
      data.append("csrf", form.elements.csrf.value);
      data.append("image", file.slice(0, n), file.name);
      var xhr = new XMLHttpRequest();
      var started = Date.now();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Upload", "script");
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) {
          return;
        }
        var pct = 100 * e.loaded / e.total;
        bar.value = pct;
        var secs = (Date.now() - started) / 1000;
        var rate = secs > 0 ? e.loaded / secs : 0;
        var left = rate > 0 ? Math.round((e.total - e.loaded) / rate) : 0;
        text.textContent = mib(e.loaded) + " of " + mib(e.total) + " (" + pct.toFixed(0) + " %), " +
          mib(rate) + "/s, " + left + " s left";
      };
      xhr.upload.onload = function () {
        bar.removeAttribute("value");
        text.textContent = "Sent; the appliance is writing and checking the update …";
      };
      xhr.onload = function () {
        if (xhr.status === 200) {
          window.location.assign("/firmware");
          return;
        }
        bar.value = 0;
        text.className = "small error";
        text.textContent = xhr.responseText || ("HTTP " + xhr.status);
        button.disabled = false;
      };
      xhr.onerror = function () {
        text.className = "small error";
        text.textContent = "The upload failed (connection lost).";
        button.disabled = false;
      };
      xhr.send(data);
    });
  });
})();
