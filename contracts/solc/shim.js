#!/usr/bin/env node
// A native-solc look-alike command line on top of solc-js (the `solc` npm
// package), so that py-solc-x can drive it as `solc_binary`.
//
// Supported: --version, --help, --standard-json (JSON on stdin) and a
// --combined-json subset (source files or "-" for stdin). Imports are read
// from --base-path, every --include-path, and the project's node_modules
// (so "@openzeppelin/..." resolves without remappings); files outside those
// roots and --allow-paths are refused, as native solc does.
//
// Output goes through fs.writeSync in a loop: process.stdout.write on a pipe
// is asynchronous and a process that exits right after it can lose all but
// the first 64 KiB.
'use strict';

const fs = require('fs');
const path = require('path');

function findNodeModules() {
  const fromEnv = process.env.FEDCHAIN_NODE_MODULES;
  if (fromEnv) return path.resolve(fromEnv);
  let dir = __dirname;
  for (;;) {
    const candidate = path.join(dir, 'node_modules');
    if (fs.existsSync(path.join(candidate, 'solc', 'package.json'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

function writeAll(fd, text) {
  const buf = Buffer.from(text, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      if (err.code === 'EAGAIN') continue; // non-blocking pipe is full: retry
      throw err;
    }
  }
}

function die(message, code) {
  writeAll(2, message.endsWith('\n') ? message : message + '\n');
  process.exit(code === undefined ? 1 : code);
}

function readStdin() {
  const chunks = [];
  const buf = Buffer.alloc(1 << 16);
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, buf, 0, buf.length, null);
    } catch (err) {
      if (err.code === 'EAGAIN') continue;
      if (err.code === 'EOF') break;
      throw err;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

const NODE_MODULES = findNodeModules();

function loadSolc() {
  if (!NODE_MODULES) die('solc shim: cannot find node_modules/solc (run `npm install` or set FEDCHAIN_NODE_MODULES)');
  // solc-js and its SMT helpers may print notices with console.log; keep
  // stdout for the compiler's JSON only.
  const log = console.log;
  console.log = (...a) => writeAll(2, a.join(' ') + '\n');
  try {
    return require(path.join(NODE_MODULES, 'solc'));
  } finally {
    console.log = log;
  }
}

const COMBINED_OUTPUTS = [
  'abi', 'ast', 'bin', 'bin-runtime', 'devdoc', 'hashes', 'metadata',
  'opcodes', 'srcmap', 'srcmap-runtime', 'storage-layout', 'userdoc',
];

const HELP = `solc, the Solidity commandline compiler (solc-js shim).

This program comes with ABSOLUTELY NO WARRANTY. This is free software, and you
are welcome to redistribute it under certain conditions. See 'solc --license'
for details.

Usage: solc [options] [input_file...]

General Information:
  --help               Show help message and exit.
  --version            Show version and exit.

Input Options:
  --base-path path     Use the given path as the root of the source tree
                       instead of the root of the filesystem.
  --include-path path  Make an additional source directory available to the
                       default import callback.
  --allow-paths path(s)
                       Allow a given path for imports. A list of paths can be
                       supplied by separating them with a comma.

Alternative Input Modes:
  --standard-json      Switch to Standard JSON input / output mode, ignoring
                       all options. It reads from standard input and provides
                       the result on the standard output.

Output Components:
  --combined-json ${COMBINED_OUTPUTS.join(',')}
                       Output a single json document containing the specified
                       information.
  --optimize           Enable optimizer.
  --optimize-runs n    The number of runs the optimizer expects.
  --evm-version version
                       Select desired EVM version.
`;

function parseArgs(argv) {
  const opts = { files: [], includePaths: [], allowPaths: [], basePath: null };
  const takesValue = new Set([
    '--base-path', '--include-path', '--allow-paths', '--combined-json',
    '--optimize-runs', '--evm-version', '--output-dir', '-o',
  ]);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    if (eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else if (takesValue.has(arg)) {
      if (i + 1 >= argv.length) die(`Error: option '${arg}' needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--version': opts.version = true; break;
      case '--help': opts.help = true; break;
      case '--license': opts.license = true; break;
      case '--standard-json': opts.standardJson = true; break;
      case '--combined-json': opts.combined = value; break;
      case '--base-path': opts.basePath = value; break;
      case '--include-path': opts.includePaths.push(value); break;
      case '--allow-paths': opts.allowPaths.push(...value.split(',').filter(Boolean)); break;
      case '--optimize': opts.optimize = true; break;
      case '--optimize-runs': opts.runs = parseInt(value, 10); break;
      case '--evm-version': opts.evmVersion = value; break;
      case '--overwrite': break;
      case '--output-dir': case '-o': die("unrecognised option '--output-dir'"); break;
      default:
        if (arg === '-' || !arg.startsWith('-')) opts.files.push(arg);
        else die(`unrecognised option '${arg}'`);
    }
  }
  return opts;
}

function makeImportCallback(opts) {
  const base = path.resolve(opts.basePath || process.cwd());
  const roots = [base, ...opts.includePaths.map((p) => path.resolve(p))];
  const allowed = [...roots, ...opts.allowPaths.map((p) => path.resolve(p))];
  if (NODE_MODULES) allowed.push(NODE_MODULES);
  const isAllowed = (file) => allowed.some((dir) => file === dir || file.startsWith(dir + path.sep));
  return function findImport(sourceUnit) {
    const candidates = [];
    if (path.isAbsolute(sourceUnit)) candidates.push(sourceUnit);
    else {
      for (const root of roots) candidates.push(path.join(root, sourceUnit));
      if (NODE_MODULES) candidates.push(path.join(NODE_MODULES, sourceUnit));
    }
    for (const file of candidates) {
      const real = path.resolve(file);
      if (!fs.existsSync(real) || !fs.statSync(real).isFile()) continue;
      if (!isAllowed(real)) return { error: `Cannot import "${sourceUnit}": ${real} is outside the allowed directories` };
      return { contents: fs.readFileSync(real, 'utf8') };
    }
    return { error: `File not found: ${sourceUnit} (looked in ${roots.concat(NODE_MODULES || []).join(', ')})` };
  };
}

function compile(solc, input, opts) {
  const log = console.log;
  console.log = (...a) => writeAll(2, a.join(' ') + '\n');
  try {
    return solc.compile(input, { import: makeImportCallback(opts) });
  } finally {
    console.log = log;
  }
}

function standardJson(opts) {
  const solc = loadSolc();
  const input = readStdin();
  try {
    JSON.parse(input);
  } catch (err) {
    writeAll(1, JSON.stringify({ errors: [{ component: 'general', formattedMessage: `Error: invalid JSON input: ${err.message}`, message: `invalid JSON input: ${err.message}`, severity: 'error', type: 'JSONError' }] }) + '\n');
    return;
  }
  const output = compile(solc, input, opts);
  writeAll(1, output.endsWith('\n') ? output : output + '\n');
}

function combinedJson(opts) {
  const solc = loadSolc();
  const wanted = opts.combined.split(',').filter(Boolean);
  for (const w of wanted) {
    if (!COMBINED_OUTPUTS.includes(w)) die(`Invalid option to --combined-json: ${w}`);
  }
  const sources = {};
  const files = opts.files.length ? opts.files : ['-'];
  for (const f of files) {
    if (f === '-') sources['<stdin>'] = { content: readStdin() };
    else sources[f] = { content: fs.readFileSync(f, 'utf8') };
  }
  const selection = new Set();
  const map = {
    abi: 'abi', bin: 'evm.bytecode.object', 'bin-runtime': 'evm.deployedBytecode.object',
    devdoc: 'devdoc', hashes: 'evm.methodIdentifiers', metadata: 'metadata',
    opcodes: 'evm.bytecode.opcodes', srcmap: 'evm.bytecode.sourceMap',
    'srcmap-runtime': 'evm.deployedBytecode.sourceMap', 'storage-layout': 'storageLayout',
    userdoc: 'userdoc',
  };
  for (const w of wanted) if (map[w]) selection.add(map[w]);
  const settings = {
    optimizer: { enabled: !!opts.optimize, runs: opts.runs || 200 },
    outputSelection: { '*': { '*': [...selection], '': wanted.includes('ast') ? ['ast'] : [] } },
  };
  if (opts.evmVersion) settings.evmVersion = opts.evmVersion;
  const out = JSON.parse(compile(solc, JSON.stringify({ language: 'Solidity', sources, settings }), opts));
  const errors = (out.errors || []).filter((e) => e.severity === 'error');
  if (errors.length) die(errors.map((e) => e.formattedMessage).join('\n'));
  for (const e of out.errors || []) writeAll(2, e.formattedMessage + '\n');
  const result = { contracts: {}, version: solc.version() };
  for (const [file, contracts] of Object.entries(out.contracts || {})) {
    for (const [name, c] of Object.entries(contracts)) {
      const entry = {};
      const evm = c.evm || {};
      if (wanted.includes('abi')) entry.abi = c.abi;
      if (wanted.includes('bin')) entry.bin = evm.bytecode ? evm.bytecode.object : '';
      if (wanted.includes('bin-runtime')) entry['bin-runtime'] = evm.deployedBytecode ? evm.deployedBytecode.object : '';
      if (wanted.includes('devdoc')) entry.devdoc = c.devdoc;
      if (wanted.includes('hashes')) entry.hashes = evm.methodIdentifiers;
      if (wanted.includes('metadata')) entry.metadata = c.metadata;
      if (wanted.includes('opcodes')) entry.opcodes = evm.bytecode ? evm.bytecode.opcodes : '';
      if (wanted.includes('srcmap')) entry.srcmap = evm.bytecode ? evm.bytecode.sourceMap : '';
      if (wanted.includes('srcmap-runtime')) entry['srcmap-runtime'] = evm.deployedBytecode ? evm.deployedBytecode.sourceMap : '';
      if (wanted.includes('storage-layout')) entry['storage-layout'] = c.storageLayout;
      if (wanted.includes('userdoc')) entry.userdoc = c.userdoc;
      result.contracts[`${file}:${name}`] = entry;
    }
  }
  if (wanted.includes('ast')) {
    result.sources = {};
    for (const [file, s] of Object.entries(out.sources || {})) result.sources[file] = { AST: s.ast };
  }
  writeAll(1, JSON.stringify(result) + '\n');
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.help) {
    writeAll(1, HELP);
    return;
  }
  if (opts.version) {
    const solc = loadSolc();
    writeAll(1, `solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (opts.license) {
    writeAll(1, 'solc-js is distributed under the MIT license; the Solidity compiler under GPL-3.0.\n');
    return;
  }
  if (opts.standardJson) return standardJson(opts);
  if (opts.combined) return combinedJson(opts);
  die('solc shim: only --version, --help, --standard-json and --combined-json are supported');
}

main();
