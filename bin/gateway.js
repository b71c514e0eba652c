#!/usr/bin/env node
'use strict'
// Runs the compiled CLI (npm install builds it into dist/ through `prepare`).

// The embedded store needs node:sqlite (Node 22.13+); an older Node would
// only fail later with a module-loader stack, so say it plainly here.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 13)) {
  console.error(`tokengate needs Node.js 22.13 or newer (26 LTS recommended); this is ${process.version}`)
  process.exit(1)
}

// On Node 22, loading node:sqlite (the embedded store) prints "SQLite is an
// experimental feature": alarming to users and not actionable. Drop exactly
// that warning, before the CLI loads the module; every other warning stays.
const emitWarning = process.emitWarning
process.emitWarning = function (warning, ...rest) {
  const type = typeof rest[0] === 'string' ? rest[0] : rest[0]?.type
  const message = typeof warning === 'string' ? warning : warning?.message
  const name = typeof warning === 'string' ? type : warning?.name
  if (name === 'ExperimentalWarning' && typeof message === 'string' && message.startsWith('SQLite is an experimental feature')) return
  return emitWarning.call(process, warning, ...rest)
}
const { main } = require('../dist/src/cli.js')

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exitCode = code
}, (err) => {
  console.error(err)
  process.exitCode = 1
})
