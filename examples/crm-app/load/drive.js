'use strict'
// One autocannon run, in its own process (load/run.js starts it): prints
// autocannon's result as JSON on stdout.
//
//   node load/drive.js '{"url":"http://127.0.0.1:3000/api/leads","method":"POST",
//                        "token":"demo-alice","lead":true,"connections":20,"duration":30}'
//
// With `lead: true` every request carries a new lead body ({ name: 'Load <n>' }),
// so each is a new lead with its own idempotency key. (autocannon's -I option
// would do that, but keeps the first body's Content-Length: requests hang.)

const autocannon = require('autocannon')

const {
  url,
  method = 'GET',
  token,
  lead = false,
  connections = 20,
  duration = 30,
} = JSON.parse(process.argv[2])
let n = 0
const headers = { authorization: `Bearer ${token}` }
if (lead) headers['content-type'] = 'application/json'

const request = { method, headers }
if (lead) {
  request.setupRequest = (req) => ({
    ...req,
    body: JSON.stringify({ name: `Load ${process.pid}-${++n}` }),
  })
}

autocannon({ url, connections, duration, requests: [request] }, (err, result) => {
  if (err) {
    console.error(err)
    process.exit(1)
  }
  process.stdout.write(JSON.stringify(result) + '\n')
})
