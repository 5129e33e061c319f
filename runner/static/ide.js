// The Devex IDE page: a file tree, a CodeMirror editor and xterm terminals, all over the
// runner's one WebSocket (docs/RUNNER_PROTOCOL.md). Plain script, no build step.
(function () {
  "use strict";

  var AUTOSAVE_MS = 1000; // write a file this long after typing stops
  var RETRY_MIN_MS = 500;
  var RETRY_MAX_MS = 15000;
  var MESSAGE_MS = 8000;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function parentOf(path) {
    var i = path.lastIndexOf("/");
    return i < 0 ? "" : path.slice(0, i);
  }

  // Where `path` ends up when `from` (a file or a folder) moves to `to`; null if not under it.
  function moved(path, from, to) {
    if (path === from) { return to; }
    if (path.indexOf(from + "/") === 0) { return to + path.slice(from.length); }
    return null;
  }

  // ---- token ---------------------------------------------------------------------------
  // The core opens this page with #token=… (a fragment never reaches a server, so no proxy
  // or access log sees it); ?token=… still works. Keep it for this tab only and drop it
  // from the address bar. It goes to the runner in the socket's first frame, never in a URL.
  function takeToken() {
    var hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    var params = new URLSearchParams(location.search);
    var found = hash.get("token") || params.get("token");
    if (hash.has("token") || params.has("token")) {
      hash.delete("token");
      params.delete("token");
      var q = params.toString();
      var h = hash.toString();
      history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
    }
    if (found) {
      sessionStorage.setItem("devexToken", found);
      return found;
    }
    return sessionStorage.getItem("devexToken");
  }
  var token = takeToken();

  // ---- messages and status lines -------------------------------------------------------
  var messageTimer = null;

  function showMessage(text) {
    var box = $("messages");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(function () { box.hidden = true; }, MESSAGE_MS);
  }

  // A short state in the top bar; what it means, when anything is wrong, in a banner.
  function setConnection(state, explanation) {
    var node = $("connection");
    node.textContent = state;
    node.className = explanation ? "bad" : "";
    $("notice").textContent = explanation || "";
    $("notice").hidden = !explanation;
  }

  function clock(savedAt) {
    if (savedAt === null || savedAt === undefined || savedAt === "") { return ""; }
    // Seconds or milliseconds since the epoch, or an ISO 8601 string.
    var when = typeof savedAt === "number"
      ? new Date(savedAt < 1e12 ? savedAt * 1000 : savedAt) : new Date(savedAt);
    if (isNaN(when.getTime())) { return ""; }
    return when.toLocaleTimeString([], {
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    });
  }

  var backupState = null; // the last saveStatus state: "off" means there is no storage save

  function renderBackup(status) {
    backupState = status.state;
    var at = clock(status.savedAt);
    var text = {
      saved: at ? "Backed up " + at : "Backed up",
      saving: "Backing up…",
      pending: at ? "Backup pending (last " + at + ")" : "Backup pending",
      error: "Backup failed: " + (status.error || "unknown error"),
      off: "Backup off",
    }[status.state];
    var node = $("backup-state");
    node.textContent = text || "Backup: " + status.state;
    node.className = status.state === "error" ? "bad" : "";
  }

  // ---- the socket ----------------------------------------------------------------------
  var ws = null;
  var ready = false;    // authenticated and Loaded: requests may go out
  var finished = false; // stopping or refused: never reconnect
  var everLoaded = false;
  var authError = null;
  var retryDelay = RETRY_MIN_MS;

  function send(event, data) {
    if (!ready || !ws) { return false; }
    ws.send(JSON.stringify({ event: event, data: data || {} }));
    return true;
  }

  function connect() {
    var url = new URL("ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var sock = new WebSocket(url.href);
    ws = sock;
    authError = null;
    if (!everLoaded) { setConnection("Connecting…"); }
    sock.addEventListener("open", function () {
      if (token) { sock.send(JSON.stringify({ event: "auth", data: { token: token } })); }
    });
    sock.addEventListener("message", function (e) {
      if (sock !== ws) { return; }
      var msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      var handler = handlers[msg.event];
      if (handler) { handler(msg.data || {}, msg); }
    });
    sock.addEventListener("close", function (e) {
      if (sock === ws) { onClose(e); }
    });
  }

  function onClose(e) {
    ws = null;
    ready = false;
    dropSessions();
    updateControls();
    if (finished) { return; }
    if (e.code === 1008) { // refused: a new socket would be refused too
      finish("Not authorized", "Not authorized: " + (authError || e.reason || "token refused") +
        ". Open the REPL again from the dashboard.");
      return;
    }
    var delay = retryDelay;
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
    setConnection("Offline", "Connection lost; reconnecting in " + Math.ceil(delay / 1000) +
      " s…");
    setTimeout(connect, delay);
  }

  // No reconnecting after this. The editor stays readable (and copyable), not editable.
  function finish(state, explanation) {
    finished = true;
    ready = false;
    setConnection(state, explanation);
    editor.setOption("readOnly", true);
    updateControls();
  }

  // ---- file tree -----------------------------------------------------------------------
  var dirs = {};             // folder path ("" is the root) -> its entries, as last listed
  var expanded = new Set();  // folders shown open
  var selected = null;       // {path, isDir}: what Rename and Delete act on
  var treeTimer = null;

  function refreshTree() {
    send("fetchDir", { dir: "" });
    expanded.forEach(function (dir) { send("fetchDir", { dir: dir }); });
  }

  // Another tab's changes come one push per file: list once they settle.
  function refreshTreeSoon() {
    clearTimeout(treeTimer);
    treeTimer = setTimeout(refreshTree, 150);
  }

  function expandTo(path) {
    for (var dir = parentOf(path); dir; dir = parentOf(dir)) { expanded.add(dir); }
  }

  function renderTree() {
    var tree = $("file-tree");
    var focused = document.activeElement && tree.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-path") : null;
    tree.textContent = "";
    if (!dirs[""]) {
      tree.appendChild(el("li", {}, "Loading files…"));
    } else if (!dirs[""].length) {
      tree.appendChild(el("li", { class: "empty" }, "No files yet."));
    } else {
      appendEntries(tree, "", 0);
    }
    if (focused !== null) {
      var again = tree.querySelector('button[data-path="' + CSS.escape(focused) + '"]');
      if (again) { again.focus(); }
    }
  }

  function appendEntries(list, dir, depth) {
    dirs[dir].forEach(function (entry) {
      var item = el("li");
      var button = el("button",
        { type: "button", "data-path": entry.path, "data-type": entry.type });
      button.style.paddingLeft = (0.5 + depth) + "rem";
      if (entry.isDir) {
        button.setAttribute("aria-expanded", String(expanded.has(entry.path)));
        button.appendChild(el("span", { class: "twisty", "aria-hidden": "true" }, "▸"));
      } else if (entry.type === "symlink") {
        button.disabled = true;
        button.className = "symlink";
        button.title = "symbolic link (not followed)";
      }
      button.appendChild(document.createTextNode(entry.name));
      if (selected && selected.path === entry.path) { button.classList.add("selected"); }
      if (current && current.path === entry.path) { button.setAttribute("aria-current", "true"); }
      item.appendChild(button);
      if (entry.isDir && expanded.has(entry.path)) {
        var sub = el("ul");
        if (dirs[entry.path]) {
          appendEntries(sub, entry.path, depth + 1);
        } else {
          sub.appendChild(el("li", { class: "empty" }, "Loading…"));
        }
        item.appendChild(sub);
      }
      list.appendChild(item);
    });
  }

  function onTreeClick(e) {
    var button = e.target.closest("button[data-path]");
    if (!button) { return; }
    var path = button.getAttribute("data-path");
    var isDir = button.getAttribute("data-type") === "dir";
    selected = { path: path, isDir: isDir };
    if (isDir && expanded.has(path)) {
      expanded.delete(path);
    } else if (isDir) {
      expanded.add(path);
      send("fetchDir", { dir: path });
    } else {
      openFile(path);
    }
    renderTree();
    updateControls();
  }

  // Asks for a workspace path; the answer is trimmed of blanks and of slashes at either end.
  function askPath(question, initial) {
    var answer = window.prompt(question, initial);
    answer = answer === null ? "" : answer.trim().replace(/^\/+|\/+$/g, "");
    return answer || null;
  }

  function folderForNew() {
    if (!selected) { return ""; }
    return selected.isDir ? selected.path : parentOf(selected.path);
  }

  function createEntry(kind) {
    var dir = folderForNew();
    var path = askPath(kind === "file" ? "New file:" : "New folder:", dir ? dir + "/" : "");
    if (path) { send(kind === "file" ? "createFile" : "createFolder", { path: path }); }
  }

  function renameSelected() {
    if (!selected) { return; }
    var to = askPath("Rename “" + selected.path + "” to:", selected.path);
    if (!to || to === selected.path) { return; }
    saveUnder(selected.path); // pending edits land before the move
    send("rename", { oldPath: selected.path, newPath: to });
  }

  function deleteSelected() {
    if (!selected) { return; }
    var what = selected.isDir ? "the folder “" + selected.path + "” and everything in it"
      : "“" + selected.path + "”";
    if (!window.confirm("Delete " + what + "?")) { return; }
    forgetFiles(selected.path); // no autosave may write it back
    send("delete", { path: selected.path });
  }

  // ---- editor and open files -----------------------------------------------------------
  var editor = CodeMirror($("editor"), {
    value: "",
    lineNumbers: true,
    indentUnit: 4,
    matchBrackets: true,
    autoCloseBrackets: true,
    styleActiveLine: true,
    readOnly: "nocursor", // until a file is open
    extraKeys: {
      "Ctrl-S": function () { saveNow(); },
      "Cmd-S": function () { saveNow(); },
      "Ctrl-/": "toggleComment",
      "Cmd-/": "toggleComment",
      "Shift-Tab": "indentLess",
      Tab: function (cm) {
        if (cm.somethingSelected()) { cm.indentSelection("add"); }
        else { cm.execCommand(cm.getOption("indentWithTabs") ? "insertTab" : "insertSoftTab"); }
      },
    },
  });
  window.devexEditor = editor;

  // path -> {path, binary, size, doc, savedGen, sent (generation in flight or null),
  //          sentPath, timer, error}. One CodeMirror document per file keeps its undo.
  var files = new Map();
  var current = null; // the file shown
  var opening = null; // the path asked for, shown when its content arrives
  var storageSaveWanted = false;

  function modeFor(path) {
    var info = CodeMirror.findModeByFileName(path.split("/").pop());
    if (!info || !CodeMirror.modes[info.mode]) { return "text/plain"; }
    return info.mime || (info.mimes && info.mimes[0]) || info.mode;
  }

  function isClean(file) { return file.binary || file.doc.isClean(file.savedGen); }
  function isSettled(file) { return isClean(file) && file.sent === null; }

  function openFile(path) {
    var file = files.get(path);
    if (file) { show(file); return; }
    opening = path;
    $("current-file").textContent = path + " (loading…)";
    send("fetchContent", { path: path });
  }

  function addFile(data) {
    var file = { path: data.path, binary: !!data.binary, size: data.size, sent: null,
      sentPath: null, timer: null, error: null };
    if (!file.binary) {
      file.doc = CodeMirror.Doc(data.content, modeFor(data.path));
      file.savedGen = file.doc.changeGeneration();
      file.doc.on("change", function () {
        file.error = null;
        clearTimeout(file.timer);
        file.timer = setTimeout(function () { saveFile(file); }, AUTOSAVE_MS);
        renderSaveState();
      });
    }
    files.set(file.path, file);
    return file;
  }

  function show(file) {
    current = file;
    opening = null;
    $("current-file").textContent = file.path;
    $("editor").hidden = file.binary;
    $("editor-note").hidden = !file.binary;
    if (file.binary) {
      $("editor-note").textContent = "binary file, " + file.size + " bytes";
    } else {
      editor.swapDoc(file.doc);
      var mode = modeFor(file.path);
      editor.setOption("mode", mode);
      editor.setOption("indentWithTabs", mode === "text/x-go");
      editor.setOption("readOnly", finished);
      editor.refresh();
      editor.focus();
    }
    renderTree();
    renderSaveState();
  }

  function showNothing() {
    current = null;
    $("current-file").textContent = "Pick a file";
    $("editor-note").textContent = "Pick a file to edit it.";
    $("editor-note").hidden = false;
    $("editor").hidden = true;
    editor.swapDoc(CodeMirror.Doc(""));
    editor.setOption("readOnly", "nocursor");
    renderSaveState();
  }

  // Whole-file writes, one in flight per file, so an older write never lands after a newer.
  function saveFile(file) {
    clearTimeout(file.timer);
    file.timer = null;
    if (file.binary || file.sent !== null || isClean(file)) { return; }
    var gen = file.doc.changeGeneration();
    if (send("updateContent", { path: file.path, content: file.doc.getValue() })) {
      file.sent = gen;
      file.sentPath = file.path;
    }
    renderSaveState();
  }

  function saveAll() { files.forEach(function (file) { saveFile(file); }); }

  function saveUnder(path) {
    files.forEach(function (file) {
      if (moved(file.path, path, path) !== null) { saveFile(file); }
    });
  }

  // Ctrl/Cmd-S and "Save now": write every open file, then have the runner back up to
  // storage once those writes are in (unless backups are off).
  function saveNow() {
    files.forEach(function (file) { file.error = null; saveFile(file); });
    storageSaveWanted = true;
    storageSaveIfWritten();
  }

  function storageSaveIfWritten() {
    if (!storageSaveWanted || !ready) { return; }
    var writing = false;
    files.forEach(function (file) { writing = writing || file.sent !== null; });
    if (writing) { return; }
    storageSaveWanted = false;
    if (backupState !== "off" && send("save", {})) { renderBackup({ state: "saving" }); }
  }

  function renderSaveState() {
    var node = $("save-state");
    var file = current;
    var text = "";
    if (file && file.binary) { text = "Read-only"; }
    else if (file && file.error) { text = "Save failed: " + file.error; }
    else if (file && file.sent !== null) { text = "Saving…"; }
    else if (file && !isClean(file)) { text = "Unsaved changes"; }
    else if (file) { text = "Saved"; }
    node.textContent = text;
    node.className = file && file.error ? "bad" : "";
  }

  function forgetFiles(path) {
    var gone = [];
    files.forEach(function (file) {
      if (moved(file.path, path, path) !== null) { gone.push(file); }
    });
    gone.forEach(function (file) {
      clearTimeout(file.timer);
      files.delete(file.path);
      if (current === file) { showNothing(); }
    });
    return gone;
  }

  function moveFiles(from, to) {
    var moves = [];
    files.forEach(function (file) {
      var dest = moved(file.path, from, to);
      if (dest !== null) { moves.push([file, dest]); }
    });
    moves.forEach(function (m) { files.delete(m[0].path); });
    moves.forEach(function (m) {
      m[0].path = m[1];
      files.set(m[1], m[0]);
    });
    if (current && moves.some(function (m) { return m[0] === current; })) {
      $("current-file").textContent = current.path;
      if (!current.binary) { editor.setOption("mode", modeFor(current.path)); }
    }
    expanded = new Set(Array.from(expanded, function (d) { return moved(d, from, to) || d; }));
    if (selected) { selected.path = moved(selected.path, from, to) || selected.path; }
  }

  // ---- terminals -----------------------------------------------------------------------
  // sessionId -> view {term, run, title, ...}; tests read output through term.buffer.
  var terminals = {};
  window.devexTerminals = terminals;
  var views = [];         // every tab, in order
  var pendingShells = []; // views waiting for terminalConnected, in request order
  var runView = null;     // the Run tab
  var activeView = null;
  var shellCount = 0;
  var panelCount = 0;

  function makeView(title, run) {
    var view = { title: title, run: run, sessionId: null, state: "connecting", typed: "" };
    view.panel = el("div", { class: "terminal-panel", role: "tabpanel", "aria-label": title,
      id: run ? "run-output" : "terminal-panel-" + (++panelCount) });
    $("terminal-panels").appendChild(view.panel);

    view.wrap = el("span", { class: "tab" });
    view.tab = el("button", { type: "button", role: "tab", "aria-controls": view.panel.id },
      title);
    var close = el("button", { type: "button", class: "close", "aria-label": "Close " + title },
      "×");
    view.tab.addEventListener("click", function () { activate(view); });
    close.addEventListener("click", function () { closeView(view); });
    view.wrap.appendChild(view.tab);
    view.wrap.appendChild(close);
    $("terminal-tabs").appendChild(view.wrap);

    view.term = new Terminal({
      cursorBlink: !run,
      fontSize: 13,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace",
      scrollback: 5000,
      theme: { background: "#1e1e1e" },
    });
    view.fit = new FitAddon.FitAddon();
    view.term.loadAddon(view.fit);
    view.term.open(view.panel);
    view.term.onData(function (data) {
      if (view.state === "open") {
        send("terminalInput", { sessionId: view.sessionId, data: data });
      } else if (view.state === "connecting") {
        view.typed += data; // typed before the session exists: sent once it does
      }
    });
    view.term.onResize(function (size) {
      if (view.state === "open") {
        send("terminalResize", { sessionId: view.sessionId, cols: size.cols, rows: size.rows });
      }
    });
    views.push(view);
    activate(view);
    return view;
  }

  function activate(view) {
    activeView = view;
    views.forEach(function (v) {
      v.panel.hidden = v !== view;
      v.tab.setAttribute("aria-selected", String(v === view));
    });
    view.fit.fit(); // a hidden terminal cannot be measured: fit when shown
    if (!view.run) { view.term.focus(); }
  }

  function write(view, text) {
    if (text) { view.lineStarted = !/\n$/.test(text); }
    view.term.write(text);
  }

  // Our own lines (dimmed, or in an ANSI color), on a line of their own.
  function note(view, text, color) {
    write(view, (view.lineStarted ? "\r\n" : "") + "\x1b[" + (color || "2") + "m" + text +
      "\x1b[0m\r\n");
  }

  function ended(view, text, color) {
    view.state = "closed";
    view.wrap.classList.add("ended");
    note(view, text, color);
    if (view === runView) { $("run-status").textContent = text.replace(/^\[|\]$/g, ""); }
    updateControls();
  }

  function removeView(view) {
    view.state = "closed";
    view.removed = true;
    view.term.dispose();
    view.panel.remove();
    view.wrap.remove();
    if (view.sessionId) { delete terminals[view.sessionId]; }
    views.splice(views.indexOf(view), 1);
    if (view === runView) { runView = null; }
    if (activeView === view) {
      activeView = null;
      if (views.length) { activate(views[views.length - 1]); }
    }
    updateControls();
  }

  function closeView(view) {
    if (view.state === "open") {
      send(view.run ? "stopRun" : "closeTerminal", { sessionId: view.sessionId });
    }
    removeView(view); // a reply for a removed view is ignored (or closes it, if connecting)
  }

  function newTerminal() {
    if (!ready) { return; }
    var view = makeView("Terminal " + (++shellCount), false);
    pendingShells.push(view);
    send("requestTerminal", { cols: view.term.cols, rows: view.term.rows });
  }

  function runOrStop() {
    if (runView && runView.state === "open") {
      if (send("stopRun", { sessionId: runView.sessionId })) { runView.stopping = true; }
      updateControls();
      return;
    }
    if (runView && runView.state === "connecting") { return; }
    saveAll(); // the program runs what is on disk: write pending edits first
    if (runView) { removeView(runView); }
    runView = makeView("Run", true);
    $("run-status").textContent = "";
    send("run", { cols: runView.term.cols, rows: runView.term.rows });
    updateControls();
  }

  // Every terminal belongs to its socket: a new socket starts with none.
  function dropSessions() {
    var why = finished ? "[stopped]" : "[connection lost]";
    views.forEach(function (view) {
      if (view.state !== "closed") { ended(view, why, "33"); }
    });
    pendingShells = [];
  }

  // ---- incoming frames -----------------------------------------------------------------
  function failed(what, data) { showMessage(what + ": " + (data.error || "failed")); }

  var handlers = {
    authResponse: function (data) {
      if (!data.success) { authError = data.error || data.message || null; }
    },

    Loaded: function (data) {
      ready = true;
      retryDelay = RETRY_MIN_MS;
      setConnection("Connected");
      if (!finished) { editor.setOption("readOnly", current ? false : "nocursor"); }
      dirs = { "": data.rootContents || [] };
      expanded.forEach(function (dir) { send("fetchDir", { dir: dir }); });
      renderTree();
      // Edits made while disconnected go out now; unchanged files reload (another tab may
      // have changed them meanwhile).
      files.forEach(function (file) {
        file.sent = null;
        if (isClean(file)) { send("fetchContent", { path: file.path }); } else { saveFile(file); }
      });
      if (opening) { send("fetchContent", { path: opening }); }
      storageSaveIfWritten();
      if (!everLoaded) { newTerminal(); } // one shell to start with
      everLoaded = true;
      updateControls();
    },

    fetchDirResponse: function (data) {
      var dir = data.path === "/" || data.path === "." ? "" : data.path || "";
      if (data.error) {
        expanded.delete(dir); // gone, most likely
        delete dirs[dir];
      } else {
        dirs[dir] = data.contents || [];
        if (data.truncated) { showMessage(dir + ": only the first entries are listed"); }
      }
      renderTree();
    },

    fetchContentResponse: function (data) {
      if (data.error) {
        if (opening === data.path) {
          opening = null;
          $("current-file").textContent = current ? current.path : "Pick a file";
        }
        failed("Cannot open " + data.path, data);
        return;
      }
      var file = files.get(data.path);
      var wanted = opening === data.path || (current !== null && current === file);
      if (file && (file.binary || data.binary)) { // replaced wholesale
        forgetFiles(data.path);
        file = null;
      }
      if (!file) {
        file = addFile(data);
        if (wanted) { show(file); }
      } else if (isSettled(file) && file.doc.getValue() !== data.content) {
        var cursor = file.doc.getCursor();
        file.doc.setValue(data.content);
        file.doc.setCursor(cursor);
        file.savedGen = file.doc.changeGeneration();
        clearTimeout(file.timer); // the change handler's: nothing to save
        file.timer = null;
        renderSaveState();
      }
    },

    updateContentResponse: function (data) {
      var file = null;
      files.forEach(function (f) {
        if (f.sent !== null && f.sentPath === data.path) { file = f; }
      });
      if (!file) { return; }
      var gen = file.sent;
      file.sent = null;
      if (data.success) {
        file.savedGen = gen;
        if (!isClean(file) && !file.timer) { saveFile(file); } // typed while it was in flight
      } else {
        file.error = data.error || "failed";
      }
      renderSaveState();
      storageSaveIfWritten();
    },

    createFileResponse: function (data) {
      if (!data.success) { failed("Cannot create " + data.path, data); return; }
      expandTo(data.path);
      selected = { path: data.path, isDir: false };
      refreshTree();
      openFile(data.path);
    },

    createFolderResponse: function (data) {
      if (!data.success) { failed("Cannot create " + data.path, data); return; }
      expandTo(data.path);
      expanded.add(data.path);
      selected = { path: data.path, isDir: true };
      refreshTree();
      updateControls();
    },

    renameResponse: function (data) {
      if (!data.success) { failed("Cannot rename " + data.oldPath, data); return; }
      moveFiles(data.oldPath, data.newPath);
      expandTo(data.newPath);
      refreshTree();
    },

    deleteResponse: function (data) {
      if (!data.success) { failed("Cannot delete " + data.path, data); return; }
      forgetFiles(data.path);
      expanded.delete(data.path);
      selected = null;
      refreshTree();
      updateControls();
    },

    // Another tab of this REPL changed something.
    fileChanged: function (data) {
      var file = files.get(data.path);
      if (data.kind === "delete") {
        if (forgetFiles(data.path).length) { showMessage(data.path + " was deleted elsewhere"); }
      } else if (data.kind === "rename" && data.newPath) {
        moveFiles(data.path, data.newPath);
      } else if (data.kind === "update" && file) {
        if (isSettled(file)) { send("fetchContent", { path: data.path }); }
        else { showMessage(data.path + " changed elsewhere; your next save replaces it"); }
      }
      refreshTreeSoon();
    },

    terminalConnected: function (data) {
      var view = data.run ? runView : pendingShells.shift();
      if (!view || view.removed || view.state !== "connecting") {
        // Its tab was closed while it was being opened.
        send(data.run ? "stopRun" : "closeTerminal", { sessionId: data.sessionId });
        return;
      }
      view.sessionId = data.sessionId;
      view.state = "open";
      terminals[data.sessionId] = view;
      if (view.typed) { send("terminalInput", { sessionId: view.sessionId, data: view.typed }); }
      view.typed = "";
      if (data.run && data.command) { note(view, "$ " + data.command); }
      if (view === activeView) { view.fit.fit(); }
      updateControls();
    },

    terminalResponse: function (data, msg) {
      var view = terminals[msg.sessionId];
      if (view && typeof msg.data === "string") { write(view, msg.data); }
    },

    terminalClosed: function (data) {
      var view = terminals[data.sessionId];
      if (!view || view.state === "closed") { return; }
      var code = typeof data.exitCode === "number" ? data.exitCode : null;
      ended(view, typeof data.signal === "number" ? "[ended by signal " + data.signal + "]"
        : code === null ? "[closed]" : "[exited with code " + code + "]");
    },

    terminalError: function (data) {
      var view = data.sessionId ? terminals[data.sessionId] : null;
      // No session id: a failed run (it says run: true) or a failed requestTerminal.
      if (!view && data.run && runView && runView.state === "connecting") { view = runView; }
      if (!view && !data.run) { view = pendingShells.shift(); }
      var text = "[" + (data.error || "terminal error") + "]";
      if (view && view.state === "connecting") { ended(view, text, "31"); }
      else if (view) { note(view, text, "31"); }
      else { showMessage(text); }
    },

    saveResponse: function (data) {
      if (data.success) { renderBackup({ state: "saved", savedAt: data.savedAt }); }
      else { renderBackup({ state: "error", error: data.error }); }
    },

    saveStatus: function (data) { renderBackup(data); },

    stopping: function (data) {
      finish("Stopped", (data.message || "The REPL is stopping.") +
        " Open it again from the dashboard once it runs.");
    },

    error: function (data) {
      if (data.event === "auth") { authError = data.message; return; }
      showMessage(data.message || "error");
    },
  };

  // ---- controls ------------------------------------------------------------------------
  function updateControls() {
    var running = !!runView && runView.state !== "closed";
    var button = $("run-button");
    var stopping = running && runView.stopping;
    button.textContent = stopping ? "Stopping…" : running ? "Stop" : "Run";
    button.classList.toggle("stop", running);
    button.disabled = !ready || stopping || (running && runView.state === "connecting");
    $("new-terminal").disabled = !ready;
    $("save-now").disabled = !ready;
    $("new-file").disabled = !ready;
    $("new-folder").disabled = !ready;
    $("rename-entry").disabled = !ready || !selected;
    $("delete-entry").disabled = !ready || !selected;
  }

  $("file-tree").addEventListener("click", onTreeClick);
  $("new-file").addEventListener("click", function () { createEntry("file"); });
  $("new-folder").addEventListener("click", function () { createEntry("folder"); });
  $("rename-entry").addEventListener("click", renameSelected);
  $("delete-entry").addEventListener("click", deleteSelected);
  $("save-now").addEventListener("click", saveNow);
  $("run-button").addEventListener("click", runOrStop);
  $("new-terminal").addEventListener("click", newTerminal);
  $("messages").addEventListener("click", function () { $("messages").hidden = true; });

  // Ctrl/Cmd-S outside the editor (inside, CodeMirror's key map has it); terminals keep it.
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "s" &&
        !e.defaultPrevented && !e.target.closest(".xterm")) {
      e.preventDefault();
      saveNow();
    }
  });

  new ResizeObserver(function () {
    if (activeView) { activeView.fit.fit(); }
  }).observe($("terminal-panels"));

  // Leaving: write what is pending now, and warn while writes are outstanding.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { saveAll(); }
  });
  window.addEventListener("beforeunload", function (e) {
    var pending = false;
    files.forEach(function (file) { pending = pending || !isSettled(file); });
    if (pending && !finished) {
      saveAll();
      e.preventDefault();
      e.returnValue = "";
    }
  });

  renderTree();
  updateControls();
  connect();
})();
