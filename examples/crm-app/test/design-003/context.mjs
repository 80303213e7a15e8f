// What design 003's Express code (./handlers.mjs) takes from the application
// around it and never shows: `app`, an Express app that parses JSON bodies (its
// `POST /api/leads` reads `req.body`), and `createLeadInDatabase(leadData,
// userProfile)`, here an in-memory stand-in. Not from the design.

import express from 'express'

export const app = express()
app.use(express.json())

/** The leads "created in the database", in order (read by the test through GET /test/leads). */
export const leads = []

export async function createLeadInDatabase(leadData, userProfile) {
  const lead = {
    id: `lead-${leads.length + 1}`,
    ...leadData,
    ownerId: userProfile.userId,
    ownerName: userProfile.name,
  }
  leads.push(lead)
  return lead
}
