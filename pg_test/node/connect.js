// Connects with node-postgres (pg) using a bi_access `url` exactly as
// returned, runs one query and prints one JSON line: what a Node BI stack
// (Cube, Lightdash, Evidence) would get. pg_test/test_node.py drives it.
//
//   node connect.js <how> <url> <sql> [params]
//
// [params]: a JSON array of the query's bound parameters, as an application
// passes them (numbers stay JavaScript numbers: pg sends each as text).
//
// <how>:
//   plain      new Client({ connectionString: url }): pg's own reading of sslmode
//   ssl-option new Client({ connectionString: url, ssl: { rejectUnauthorized: false } })
//   libpq      new Client(parse(url, { useLibpqCompat: true })): libpq's reading
//              of sslmode, the url untouched
'use strict'

const { Client } = require('pg')
const { parse } = require('pg-connection-string')

function config(how, url) {
  switch (how) {
    case 'plain':
      return { connectionString: url }
    case 'ssl-option':
      return { connectionString: url, ssl: { rejectUnauthorized: false } }
    case 'libpq':
      return parse(url, { useLibpqCompat: true })
    default:
      throw new Error(`unknown way to connect: ${how}`)
  }
}

async function main() {
  const [how, url, sql, params] = process.argv.slice(2)
  const client = new Client({ ...config(how, url), connectionTimeoutMillis: 10000 })
  const out = {}
  try {
    await client.connect()
    out.encrypted = Boolean(client.connection.stream.encrypted)
    const values = params ? JSON.parse(params) : undefined
    const result = await client.query({ text: sql, values, rowMode: 'array' })
    out.rows = result.rows.map((row) => row.map(String))
    out.ok = true
  } catch (err) {
    out.ok = false
    out.code = err.code || null
    out.message = err.message
  } finally {
    await client.end().catch(() => {})
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

main()
