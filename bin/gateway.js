#!/usr/bin/env node
'use strict'
// Runs the compiled CLI (npm install builds it into dist/ through `prepare`).

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
