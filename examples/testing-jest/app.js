'use strict'
// The app under test: a small leads API on smart-crm-consumer. `createApp(crm)`
// takes its consumer, so production passes a real one
// (`new SmartCRMConsumer(process.env.TENANT_ID)`) and the tests a test double
// (`createTestConsumer(...)` from `smart-crm-consumer/testing`).

const express = require('express')
const { requirePermission, requireCredits } = require('smart-crm-consumer/express')

function createApp(crm) {
  const app = express()
  app.use(express.json())
  // A stand-in for the app's authentication, which sets req.user.
  app.use((req, res, next) => {
    const id = req.get('x-user-id')
    if (id) req.user = { id }
    next()
  })

  app.get('/leads/limits', requirePermission(crm, 'crm.leads.read'), (req, res) => {
    res.json(crm.getActiveConfig('limits') ?? { maxLeadsPerDay: 0 })
  })

  // A lead costs credits: checked before the work, deducted once it is done,
  // with the client's idempotency key so that a retried request is charged once.
  app.post(
    '/leads',
    requirePermission(crm, 'crm.leads.create'),
    requireCredits(crm, 'crm.leads.create'),
    async (req, res, next) => {
      try {
        const owner = await crm.getUserProfile(req.user.id)
        const lead = { name: req.body.name, owner: owner.name }
        const { remaining } = await crm.deductCredits(req.user.id, req.creditCost, {
          operationCode: 'crm.leads.create',
          idempotencyKey: req.get('idempotency-key'),
        })
        res.status(201).json({ lead, remaining })
      } catch (err) {
        next(err)
      }
    },
  )

  // The consumer's error codes, as answers to the client.
  app.use((err, req, res, next) => {
    if (err.code === 'WRAPPER_UNAVAILABLE') {
      return res.status(503).set('Retry-After', '1').json({ error: 'Try again' })
    }
    if (err.code === 'INSUFFICIENT_CREDITS') {
      return res.status(402).json({ error: 'Insufficient credits', available: err.available })
    }
    if (err.code === 'NOT_FOUND') return res.status(404).json({ error: 'Unknown user' })
    next(err)
  })
  return app
}

module.exports = { createApp }
