import { app } from 'egg-mock/bootstrap';
import { resetWorld } from './support/world';

before(() => app.ready());
beforeEach(() => resetWorld());
