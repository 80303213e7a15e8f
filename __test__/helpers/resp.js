'use strict'
// The minimal RESP client lives in tools/test-helpers/resp.js (shipped as
// `smart-crm-consumer/test-helpers`, where the topology launchers use it too).
module.exports = require('../../tools/test-helpers/resp.js')
